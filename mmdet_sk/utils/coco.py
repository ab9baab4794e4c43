# Copyright (c) mmdet-sk contributors. All rights reserved.
"""COCO's object-size ranges, shared by the demo data and the scale analysis."""

#: COCOeval's area ranges ``(name, low, high)`` in pixels: small < 32**2 <= medium < 96**2 <=
#: large (bounds inclusive there; an area equal to a bound is counted above it).
AREA_RANGES = (('small', 0, 32**2), ('medium', 32**2, 96**2), ('large', 96**2, float('inf')))
#: The names of the ranges, smallest first.
AREA_BUCKETS = tuple(name for name, _, _ in AREA_RANGES)
