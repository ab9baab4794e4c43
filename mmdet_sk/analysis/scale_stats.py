# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Statistics of a scale analysis: does SK select the larger kernel for larger inputs?

Takes the weights :func:`~mmdet_sk.analysis.sk_selection.collect_scale_selection` recorded
(``weights[scale][group]``, arrays (num_images, K)) and summarises them per area bucket, group
and scale (:func:`summarize`); judges the trend of each group's large-kernel weight over the
scales (:func:`trend_verdict`, :func:`verdicts`) and sums the judgements up over the groups
(:func:`large_kernel_summary`). The files are written by
:mod:`~mmdet_sk.analysis.scale_report`.
"""
from collections import OrderedDict
from typing import Dict, Sequence

import numpy as np

from .sk_selection import BUCKETS, SKGroup


def summarize(weights: dict, buckets: dict, indices: Sequence[int]) -> dict:
    """Mean branch weights per bucket, group and scale.

    Args:
        weights (dict): ``weights[scale][group]`` arrays (num_images, K), rows in the order of
            ``indices`` (from
            :func:`~mmdet_sk.analysis.sk_selection.collect_scale_selection`).
        buckets (dict): Area bucket of each index.
        indices (Sequence[int]): The image indices, in the order of the rows.

    Returns:
        dict: ``table[bucket][group][scale] = (num_images, mean weights (K,))`` for the buckets
        ``'all'``, ``'small'``, ``'medium'``, ``'large'`` that have images.
    """
    table: dict = OrderedDict()
    for bucket in ('all', ) + BUCKETS:
        rows = np.array([bucket == 'all' or buckets[i] == bucket for i in indices])
        if not rows.any():
            continue
        table[bucket] = OrderedDict()
        for scale, per_group in weights.items():
            for name, w in per_group.items():
                table[bucket].setdefault(name, OrderedDict())[scale] = (int(rows.sum()),
                                                                        w[rows].mean(0))
    return table


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties get their average rank); nan if one side is constant."""

    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind='stable')
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float('nan')
    return float(np.corrcoef(rx, ry)[0, 1])


def trend_verdict(name: str,
                  label: str,
                  erf: int,
                  scales: Sequence[float],
                  large_weights: Sequence[float],
                  tol: float = 1e-3) -> dict:
    """Does the large-kernel weight rise with the input scale?

    The answer is YES when the Spearman correlation between scale and weight and the slope of
    a least-squares line are both positive and the weight moves by at least ``tol`` (max - min)
    over the scales; "monotonically" when the correlation is 1.

    Args:
        name (str): Group name.
        label (str): Label of the large branch, e.g. ``'k3d2'``.
        erf (int): Its effective receptive field.
        scales (Sequence[float]): Input scales, at least two distinct.
        large_weights (Sequence[float]): Mean weight of the large branch at each scale.
        tol (float): Smallest change that counts as a change. Default: 1e-3.

    Returns:
        dict: ``rho``, ``slope`` (weight per unit of scale), ``change`` (weight at the largest
        scale minus weight at the smallest), ``rises`` (bool), ``trend`` (words) and ``line``.
    """
    order = np.argsort(np.asarray(scales, dtype=np.float64))
    s = np.asarray(scales, dtype=np.float64)[order]
    w = np.asarray(large_weights, dtype=np.float64)[order]
    rho = spearman(s, w)
    slope = float(np.polyfit(s, w, 1)[0]) if len(s) > 1 else float('nan')
    change = float(w[-1] - w[0])
    if len(s) < 2 or float(w.max() - w.min()) < tol:
        trend = f'flat (moves less than {tol:g})'
    elif rho >= 1 - 1e-9:
        trend = 'rises monotonically'
    elif rho <= -1 + 1e-9:
        trend = 'falls monotonically'
    elif rho > 0 and slope > 0:
        trend = 'tends to rise (not monotonic)'
    elif rho < 0 and slope < 0:
        trend = 'tends to fall (not monotonic)'
    else:
        trend = 'no clear trend'
    rises = trend in ('rises monotonically', 'tends to rise (not monotonic)')
    line = (f'{name}: large kernel {label} (RF {erf}) weight {w[0]:.4f} -> {w[-1]:.4f} over '
            f'scales {s[0]:g}-{s[-1]:g}; Spearman rho={rho:+.2f}, slope={slope:+.4f}/scale: '
            f'{"YES" if rises else "NO"}, {trend}')
    return dict(rho=rho, slope=slope, change=change, rises=rises, trend=trend, line=line)


def verdicts(table: dict, groups: Dict[str, SKGroup], bucket: str = 'all',
             tol: float = 1e-3) -> 'OrderedDict[str, dict]':
    """:func:`trend_verdict` of every group of ``table[bucket]``."""
    out = OrderedDict()
    for name, per_scale in table.get(bucket, {}).items():
        group = groups[name]
        k = group.large_index
        scales = list(per_scale)
        out[name] = trend_verdict(name, group.labels[k], group.erfs[k], scales,
                                  [per_scale[s][1][k] for s in scales], tol)
    return out


def large_kernel_summary(verdict_table: dict) -> dict:
    """Sum the verdicts of the SK sites up: how many rise, and by how much.

    Args:
        verdict_table (dict): Per site (group) a verdict, as :func:`verdicts` returns them:
            a dict with ``rho``, ``slope``, ``change``, ``rises``, ``trend`` and ``line``.

    Returns:
        dict: ``sites`` (how many), ``rising`` (how many have ``rises``), ``mean_change`` and
        ``max_change`` (mean and maximum of ``change``, the large-kernel weight at the largest
        scale minus that at the smallest; nan without sites) and ``line``, e.g.
        ``'2 of 7 sites rise; large-kernel weight change over the scales: mean +0.004, max
        +0.012'``.
    """
    changes = np.array([float(v['change']) for v in verdict_table.values()], dtype=np.float64)
    sites = len(changes)
    rising = sum(bool(v['rises']) for v in verdict_table.values())
    mean_change = float(changes.mean()) if sites else float('nan')
    max_change = float(changes.max()) if sites else float('nan')
    line = (f'{rising} of {sites} sites rise; large-kernel weight change over the scales: '
            f'mean {mean_change:+.3f}, max {max_change:+.3f}')
    return dict(sites=sites, rising=rising, mean_change=mean_change, max_change=max_change,
                line=line)
