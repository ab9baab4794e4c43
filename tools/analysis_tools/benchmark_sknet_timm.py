#!/usr/bin/env python
"""SKNet against timm's own SKNet in mmpretrain's TIMMBackbone: same outputs, speed side by side.

    .venv-compat/bin/python tools/analysis_tools/benchmark_sknet_timm.py    # the compat stack
    ... --archs skresnext50_32x4d --shape 800 1216 --repeats 5 --json out.json

timm (and so mmpretrain's ``TIMMBackbone``, the OpenMMLab wrapper of timm models) imports
torchvision, which loads only in the compat stack (``make compat``). For each timm SKNet: random
weights with trained-like BatchNorms, loaded into both (converted for SKNet); the four stage
outputs are checked equal (eval mode) before anything is timed. Then, in one process, each the
median of interleaved rounds (every model once per round, the order rotated):

* inference: eval mode, ``torch.no_grad``, one (1, 3, H, W) image;
* train step: train mode with batch statistics in both (``TIMMBackbone`` has no ``norm_eval``;
  SKNet with ``norm_eval=False``), forward and backward of the summed stage outputs, two images.
"""
import argparse
import json
import os
import platform
import time

import torch
from mmpretrain.models.backbones import TIMMBackbone
from torch import nn

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import TIMM_SKNETS, timm_sknet_to_mmdet
from mmdet_sk.utils.benchmark import interleaved, trained_like_norms


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--archs', nargs='+', choices=sorted(TIMM_SKNETS),
                        default=['skresnext50_32x4d', 'skresnet18'])
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1216), metavar=('H', 'W'),
                        help='input size (default: 800 1216, a COCO image padded to 32)')
    parser.add_argument('--repeats', type=int, default=5, help='interleaved rounds')
    parser.add_argument('--json', help='write the results here')
    return parser.parse_args()


def pair(arch: str):
    """SKNet and TIMMBackbone with the same (random, trained-like) weights."""
    wrapped = TIMMBackbone(model_name=arch, features_only=True, pretrained=False,
                           out_indices=(1, 2, 3, 4))
    trained_like_norms(wrapped)
    timm_sd = wrapped.timm_model.state_dict()
    _, kwargs, (converted, _, _) = timm_sknet_to_mmdet(timm_sd)
    ours = SKNet(**kwargs, out_indices=(0, 1, 2, 3), norm_eval=False)
    ours.load_state_dict(converted, strict=True)
    return ours, wrapped


def check_outputs(ours: nn.Module, wrapped: nn.Module, x: torch.Tensor) -> float:
    """The largest stage error relative to the stage's scale; fail above 1e-5."""
    ours.eval()
    wrapped.eval()
    with torch.no_grad():
        errs = [((a - b).abs().max() / b.abs().max()).item()
                for a, b in zip(ours(x), wrapped(x))]
    if max(errs) > 1e-5:
        raise SystemExit(f'SKNet and TIMMBackbone differ: relative errors {errs}')
    return max(errs)


def main():
    args = parse_args()
    h, w = args.shape
    results = dict(shape=[h, w], repeats=args.repeats, threads=torch.get_num_threads(),
                   torch=torch.__version__, machine=platform.processor() or platform.machine(),
                   load_average=os.getloadavg()[0], archs={})
    for arch in args.archs:
        torch.manual_seed(0)
        ours, wrapped = pair(arch)
        x1 = torch.randn(1, 3, h, w)
        x2 = torch.randn(2, 3, h, w)
        err = check_outputs(ours, wrapped, x1)

        def infer(model):
            def fn():
                model.eval()
                with torch.no_grad():
                    model(x1)
            return fn

        def train(model):
            def fn():
                model.train()
                model.zero_grad(set_to_none=True)
                sum(o.mean() for o in model(x2)).backward()
            return fn

        fns = {'SKNet infer': infer(ours), 'TIMMBackbone infer': infer(wrapped),
               'SKNet train': train(ours), 'TIMMBackbone train': train(wrapped)}
        for fn in fns.values():  # warm-up
            fn()
        start = time.perf_counter()
        ms = interleaved(fns, args.repeats, torch.device('cpu'))
        entry = dict(max_rel_error=err, ms=ms, seconds=time.perf_counter() - start,
                     params_M=sum(p.numel() for p in ours.parameters()) / 1e6)
        entry['ratio'] = {mode: ms[f'SKNet {mode}'] / ms[f'TIMMBackbone {mode}']
                          for mode in ('infer', 'train')}
        results['archs'][arch] = entry
        print(f'{arch} at {h}x{w} ({entry["params_M"]:.2f}M backbone params, stage outputs '
              f'equal to {err:.1e} of scale), median of {args.repeats} interleaved rounds:')
        for mode, batch in (('infer', 1), ('train', 2)):
            print(f'  {mode} (batch {batch}): SKNet {ms[f"SKNet {mode}"]:.0f} ms, TIMMBackbone '
                  f'{ms[f"TIMMBackbone {mode}"]:.0f} ms, ratio {entry["ratio"][mode]:.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
