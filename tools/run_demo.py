#!/usr/bin/env python
"""The embedded demo: generate the shapes set if missing, train on CPU, evaluate, draw.

    python tools/run_demo.py              # the SK detector the from-scratch experiment chose
    python tools/run_demo.py --baseline   # its plain counterpart
    python tools/run_demo.py --config configs/demo/faster-rcnn_r18_fpn_shapes.py   # any config

It runs ``tools/train.py`` and ``tools/test.py --show-dir`` as subprocesses, exactly as a user
would, then prints the COCO bbox summary, where the checkpoint and the drawings are and, for
the detectors of the paired from-scratch experiment (``docs/sk_scratch.json``, written by
``tools/analysis_tools/sk_scratch.py``), that experiment's result over its seeds: one run's
mAP alone says little about SK against plain.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from mmengine.config import Config

from mmdet_sk.datasets import data_root_options, ensure_demo_data

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: the demo until the from-scratch experiment has chosen one
DEFAULT_CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
DEFAULT_BASELINE = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
SCRATCH_RESULT = 'docs/sk_scratch.json'
DEFAULT_DATA_ROOT = 'data/coco_shapes'
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', help='demo config; default: the SK detector that '
                        '--scratch-result chose (its "demo" entry), else ' + DEFAULT_CONFIG)
    parser.add_argument('--baseline', action='store_true',
                        help='train the plain counterpart of the default SK detector')
    parser.add_argument('--scratch-result', default=SCRATCH_RESULT,
                        help='the paired from-scratch experiment\'s result (make scratch)')
    parser.add_argument('--work-dir', help='default: work_dirs/<config name>')
    parser.add_argument(
        '--data-root', default=DEFAULT_DATA_ROOT,
        help='COCO-format data set; the default (or a folder that does not exist yet) is '
        'generated with tools/misc/generate_demo_data.py\'s defaults, another one used as is')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to both tools (after the data root options)')
    return parser.parse_args(argv)


def run(cmd):
    print('+', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def last_test_metrics(work_dir):
    """The newest ``tools/test.py`` run under ``work_dir`` and its metrics.

    ``tools/test.py`` writes them, one JSON object, to ``<timestamp>/<timestamp>.json``.
    """
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    for run_dir in reversed(runs):
        path = osp.join(work_dir, run_dir, f'{run_dir}.json')
        if osp.isfile(path):
            with open(path) as f:
                metrics = json.load(f)
            if 'coco/bbox_mAP' in metrics:
                return run_dir, metrics
    raise RuntimeError(f'no COCO bbox metrics under {work_dir}: did tools/test.py evaluate?')


def scratch_result(path: str):
    """The from-scratch experiment's result (``sk_scratch.json``), or None if there is none."""
    path = osp.join(ROOT, path)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def demo_config(args, result) -> str:
    """The config to train: ``--config``, else the experiment's choice (or its plain arm)."""
    if args.config:
        return args.config
    demo = (result or {}).get('demo') or dict(config=DEFAULT_CONFIG,
                                                plain_config=DEFAULT_BASELINE)
    return demo['plain_config'] if args.baseline else demo['config']


def _stats(s) -> str:
    if not s:
        return 'not run yet'
    sign = '+' if s.get('signed') else ''
    values = ', '.join(f'{v:{sign}.3f}' for v in s['values'])
    return f'{s["mean"]:{sign}.3f} ± {s["std"]:.3f} ({values})'


def paired_lines(result, config: str, source: str = SCRATCH_RESULT) -> list:
    """The committed paired result of the demo's SK detector and its plain counterpart, if
    ``config`` is either of them; else nothing."""
    demo = (result or {}).get('demo')
    if not demo or config not in (demo['config'], demo['plain_config']):
        return []
    table = result['table']
    sk, plain = table[demo['arm']], table[demo['plain_arm']]
    n = (sk.get('vs_plain') or {}).get('n', 0)
    lines = [f'From scratch, paired seeds ({source}, make scratch), COCO bbox mAP:',
             f'  {sk["label"]}: {_stats(sk["mAP"])}',
             f'  {plain["label"]}: {_stats(plain["mAP"])}']
    if n:
        lines.append(f'  paired difference: {_stats(sk["vs_plain"])}, higher in '
                     f'{sk["vs_plain"]["wins"]} of {n} seeds: {sk["vs_plain_verdict"]}')
    lines.append(f'  {demo["why"]}')
    return lines


def main():
    args = parse_args()
    result = scratch_result(args.scratch_result)
    args.config = demo_config(args, result)
    start = time.time()
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', name)
    if args.data_root == DEFAULT_DATA_ROOT or not osp.exists(osp.join(ROOT, args.data_root)):
        ensure_demo_data(osp.join(ROOT, args.data_root))  # the demo's own set: (re)generate
    extra = (['--cfg-options'] + data_root_options(args.data_root, Config.fromfile(args.config)) +
             args.cfg_options)
    py = sys.executable
    run([py, 'tools/train.py', args.config, '--work-dir', work_dir] + extra)
    with open(osp.join(ROOT, work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    test_dir = osp.join(work_dir, 'test')
    run([py, 'tools/test.py', args.config, ckpt, '--work-dir', test_dir, '--show-dir', 'vis'] +
        extra)
    run_dir, metrics = last_test_metrics(osp.join(ROOT, test_dir))
    print('\n=== mmdet-sk demo:', name)
    print('COCO bbox  ' + '  '.join(f'{m[5:]}={metrics["coco/" + m]:.3f}' for m in METRICS))
    print(f'checkpoint: {ckpt}')
    print(f'drawn predictions: {osp.join(test_dir, run_dir, "vis")}')
    print(f'wall time: {time.time() - start:.0f} s')
    for line in paired_lines(result, args.config, args.scratch_result):
        print(line)


if __name__ == '__main__':
    main()
