# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Write the timm SKNet reference the tests compare SKNet with (needs timm: ``make compat``).

    make timm-reference        # = .venv-compat/bin/python tools/misc/timm_sknet_reference.py

timm imports torchvision, which cannot load beside the project's CPU torch, so the suite in
``.venv`` cannot run timm itself. This script runs timm's own SKNet blocks
(``timm.models.sknet.SelectiveKernelBottleneck`` / ``SelectiveKernelBasic`` in timm's
``ResNet``) at small widths, with the published models' SK settings but for the reduction,
which is chosen so that ``d`` takes several values, and writes for each:

* the timm state dict (timm's key names), its BatchNorms given trained-like statistics and
  affine parameters (random, not the fresh 0 / 1), the other weights as timm initialised them;
* the SKNet arguments of the same network;
* an input batch (2, 3, 64, 64) and timm's four stage outputs (``features_only``,
  ``out_indices=(1, 2, 3, 4)``) in eval mode and in train mode (batch statistics), computed in
  float64 from the same (float32) weights, and in eval mode in float32.

Why float64: in train mode every BatchNorm divides by its batch's standard deviation, which
for a channel that is nearly constant over a small batch (mostly zero after a ReLU) is close
to ``sqrt(eps)``; rounding differences of 1e-7 grow by up to that factor at each such layer,
so two float32 forwards of the same network that sum in another order (timm stacks the paths,
SKConv accumulates them) part by up to 1e-3 of the scale after 16 blocks. In float64 the same
growth leaves them 1e-13 apart: the comparison shows the networks are the same, not how
float32 rounds.

The file is about 2.5 MB, two thirds of it the two networks' float32 weights (about 210,000
parameters each), the rest their inputs and stage outputs;
``tests/test_models/test_backbones/test_sknet.py`` and
``tests/test_tools/test_timm_sknet2mmdet.py`` read it.
"""
import argparse
import copy
import os.path as osp

import timm
import torch
from timm.models.resnet import ResNet
from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck
from torch import nn

from mmdet_sk.utils.benchmark import trained_like_norms

DEFAULT_OUT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tests',
                       'data', 'timm_sknet_reference.pth')

# name: (timm ResNet arguments, SKNet arguments). Stage planes 4-32 (bottlenecks: grouped widths
# 8-64, outputs 16-128) and 8-64 (basic blocks), the real depths' block counts, timm's
# 64-channel 7x7 stem. timm's width is planes * base_width / 64 * cardinality, mmdet's
# planes * base_width / base_channels * groups: the SKNet arguments give the same widths.
MODELS = {
    'sk_resnext_tiny': (
        dict(block=SelectiveKernelBottleneck, layers=[3, 4, 6, 3], channels=(4, 8, 16, 32),
             cardinality=4, base_width=32, zero_init_last=False,
             block_args=dict(sk_kwargs=dict(rd_ratio=1 / 4, rd_divisor=8, split_input=False))),
        dict(depth=50, groups=4, base_width=2, base_channels=4, stem_channels=64,
             sk_cfg=dict(reduction=4, L=8))),
    'sk_resnet_tiny': (
        dict(block=SelectiveKernelBasic, layers=[2, 2, 2, 2], channels=(8, 16, 32, 64),
             zero_init_last=False,
             block_args=dict(sk_kwargs=dict(rd_ratio=1 / 2, rd_divisor=8, split_input=True))),
        dict(depth=18, base_channels=8, stem_channels=64, sk_cfg=dict(reduction=2, L=8))),
}


def stage_outputs(model: nn.Module, x: torch.Tensor, mode: str,
                  dtype: torch.dtype) -> list:
    """timm's ``features_only`` outputs 1-4 (layer1..layer4) of a copy of ``model`` in
    ``mode`` and ``dtype``, computed by timm's forward."""
    model = copy.deepcopy(model).to(dtype)
    getattr(model, mode)()
    feats = timm.models.FeatureListNet(model, out_indices=(1, 2, 3, 4))
    with torch.no_grad():
        return [f.clone() for f in feats(x.to(dtype))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=DEFAULT_OUT, help=f'default: {DEFAULT_OUT}')
    args = parser.parse_args()
    reference = dict(timm=str(timm.__version__), torch=str(torch.__version__), models={})
    for seed, (name, (timm_kwargs, sknet_kwargs)) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        model = trained_like_norms(ResNet(num_classes=10, **timm_kwargs), seed)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(100 + seed))
        state_dict = {k: v.clone() for k, v in model.state_dict().items()}
        reference['models'][name] = dict(
            state_dict=state_dict, sknet=sknet_kwargs, input=x,
            eval=stage_outputs(model, x, 'eval', torch.float64),
            train=stage_outputs(model, x, 'train', torch.float64),
            eval_fp32=stage_outputs(model, x, 'eval', torch.float32))
        eval_outs = reference['models'][name]['eval']
        params = sum(v.numel() for k, v in state_dict.items() if not k.startswith('fc.'))
        print(f'{name}: {params} backbone parameters, outputs '
              f'{[tuple(o.shape) for o in eval_outs]}')
    torch.save(reference, args.out)
    print(f'wrote {args.out} (timm {timm.__version__}, torch {torch.__version__})')


if __name__ == '__main__':
    main()
