#!/usr/bin/env python
"""Test a detector: MMDetection's ``tools/test.py``, with mmdet-sk set up first.

Same command line as MMDetection's (``python tools/test.py CONFIG CHECKPOINT [--work-dir D]
[--show-dir D] [--cfg-options ...] [--launcher pytorch]``); see ``--help``.
"""
from mmdet_sk.utils.launch import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('test.py')
