#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Parameters and FLOPs of a detector config, with MMEngine's ``get_model_complexity_info``.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--show-table]
        [--cfg-options ...]

The model is built from the config alone (no checkpoint, backbone ``init_cfg`` set to None so
that nothing is downloaded), in eval mode, with SyncBN turned into BN. It runs once in
``mode='tensor'`` on a random (1, 3, H, W) input; H and W are padded up to the data
preprocessor's ``pad_size_divisor``, as a real batch would be. Default shape: the test
pipeline's ``Resize`` scale, else 800 x 1333.

The numbers are those of MMEngine's counter (fvcore rules): one multiply-add counts as one
FLOP, and operators it has no rule for count 0. For two-stage detectors the RoI head's share
depends on the number of proposals the randomly initialised RPN keeps (at most the config's
``test_cfg.rpn.max_per_img``), as in MMDetection's own ``get_flops.py``. The counting is
:func:`mmdet_sk.utils.complexity.model_complexity`, which the other tools use too.
"""
import argparse

from mmdet_sk.utils.complexity import model_complexity


def parse_args() -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Params and FLOPs of a detector config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='input height and width (default: the test Resize scale)')
    parser.add_argument('--show-table', action='store_true', help='print the per-module table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, xxx=yyy')
    return parser.parse_args()


def main() -> None:
    from mmengine.config import Config
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    res = model_complexity(cfg, args.shape, args.show_table)
    if args.show_table:
        print(res['table'])
    line = '=' * 40
    print(f'{line}\nConfig: {args.config}\nInput shape: {res["input_shape"]}\n'
          f'FLOPs: {res["flops_str"]} ({res["flops"]})\n'
          f'Params: {res["params_str"]} ({res["params"]})\n{line}\n'
          'MMEngine counter: one multiply-add = 1 FLOP; ops without a rule count 0.')


if __name__ == '__main__':
    main()
