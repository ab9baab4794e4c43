#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Parameters and FLOPs of a detector config, with MMEngine's ``get_model_complexity_info``.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--show-table]
        [--cfg-options ...]

What is built and counted, and how: :mod:`mmdet_sk.utils.complexity`, which the other tools
use too.
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
