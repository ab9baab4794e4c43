#!/usr/bin/env python
"""Train a detector: MMDetection's ``tools/train.py``, with mmdet-sk set up first.

Same command line as MMDetection's (``python tools/train.py CONFIG [--work-dir D] [--resume]
[--amp] [--cfg-options ...] [--launcher pytorch]``); see ``--help``.
"""
from mmdet_sk.utils.launch import run_mmdet_tool

if __name__ == '__main__':
    run_mmdet_tool('train.py')
