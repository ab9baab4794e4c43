# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Write the timm SKNet reference the tests compare SKNet with (needs timm: ``make compat``).

    make timm-reference        # = .venv-compat/bin/python tools/misc/timm_sknet_reference.py

timm imports torchvision, which cannot load beside the project's CPU torch, so the suite in
``.venv`` cannot run timm itself. This script runs timm's own SKNet blocks
(``timm.models.sknet.SelectiveKernelBottleneck`` / ``SelectiveKernelBasic`` in timm's
``ResNet``) at small widths, with the published models' SK settings but for the reduction,
which is chosen so that ``d`` takes several values, and writes for each:

* the timm state dict (timm's key names), its BatchNorms given trained-like statistics and
  affine parameters (random, not the fresh 0 / 1), and the SK gate-free weights as built;
* the SKNet arguments of the same network;
* an input batch (2, 3, 64, 64) and timm's four stage outputs (``features_only``,
  ``out_indices=(1, 2, 3, 4)``) in eval mode and in train mode (batch statistics).

The file is a few hundred kB; ``tests/test_models/test_backbones/test_sknet.py`` reads it.
"""
import argparse
import os.path as osp

import timm
import torch
from timm.models.resnet import ResNet
from timm.models.sknet import SelectiveKernelBasic, SelectiveKernelBottleneck
from torch import nn

DEFAULT_OUT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tests',
                       'data', 'timm_sknet_reference.pth')

# name: (timm ResNet arguments, SKNet arguments). Stage widths 8-64 (x4 for bottlenecks),
# the real depths' block counts, timm's 64-channel 7x7 stem.
MODELS = {
    'sk_resnext_tiny': (
        dict(block=SelectiveKernelBottleneck, layers=[3, 4, 6, 3], channels=(8, 16, 32, 64),
             cardinality=4, base_width=32, zero_init_last=False,
             block_args=dict(sk_kwargs=dict(rd_ratio=1 / 4, rd_divisor=8, split_input=False))),
        dict(depth=50, groups=4, base_width=4, base_channels=8, stem_channels=64,
             sk_cfg=dict(reduction=4, L=8))),
    'sk_resnet_tiny': (
        dict(block=SelectiveKernelBasic, layers=[2, 2, 2, 2], channels=(8, 16, 32, 64),
             zero_init_last=False,
             block_args=dict(sk_kwargs=dict(rd_ratio=1 / 2, rd_divisor=8, split_input=True))),
        dict(depth=18, base_channels=8, stem_channels=64, sk_cfg=dict(reduction=2, L=8))),
}


def trained_like(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, as a trained network has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list:
    """timm's ``features_only`` outputs 1-4 (layer1..layer4), computed by timm's forward."""
    feats = timm.models.FeatureListNet(model, out_indices=(1, 2, 3, 4))
    with torch.no_grad():
        return [f.clone() for f in feats(x)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=DEFAULT_OUT, help=f'default: {DEFAULT_OUT}')
    args = parser.parse_args()
    reference = dict(timm=timm.__version__, torch=torch.__version__, models={})
    for seed, (name, (timm_kwargs, sknet_kwargs)) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        model = trained_like(ResNet(num_classes=10, **timm_kwargs), seed)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(100 + seed))
        state_dict = {k: v.clone() for k, v in model.state_dict().items()}
        eval_outs = stage_outputs(model.eval(), x)
        train_outs = stage_outputs(model.train(), x)  # updates the running stats: saved before
        reference['models'][name] = dict(
            state_dict=state_dict, sknet=sknet_kwargs, input=x, eval=eval_outs, train=train_outs)
        params = sum(v.numel() for k, v in state_dict.items() if not k.startswith('fc.'))
        print(f'{name}: {params} backbone parameters, outputs '
              f'{[tuple(o.shape) for o in eval_outs]}')
    torch.save(reference, args.out)
    print(f'wrote {args.out} (timm {timm.__version__}, torch {torch.__version__})')


if __name__ == '__main__':
    main()
