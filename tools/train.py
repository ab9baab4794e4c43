#!/usr/bin/env python
"""Train a detector: MMDetection's ``tools/train.py``, with mmdet-sk set up first.

Same command line as MMDetection's (``python tools/train.py CONFIG [--work-dir D] [--resume]
[--amp] [--cfg-options ...] [--launcher pytorch]``); see ``--help``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdet_sk.utils.launch import run_mmdet_tool  # noqa: E402

if __name__ == '__main__':
    run_mmdet_tool('train.py')
