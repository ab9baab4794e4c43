#!/usr/bin/env python
"""Which norm for SK's branches under ``norm_eval=True``: BatchNorm that trains, or GroupNorm?

    python tools/analysis_tools/benchmark_sk_norm.py [--batch 2] [--rounds 15] [--device cpu]

MMDetection's R-50 configs freeze the backbone's BatchNorms (``norm_eval=True``). SK's own
norms must learn all the same; two ways were considered: BatchNorm kept training by
``PluginResNet`` (statistics over the batch during training, folded into the convolution for
inference), or a norm without running statistics (GroupNorm, 32 groups), which needs no
exemption but is computed at inference too. For the gated paper preset (``kernels=(3, 3),
dilations=(1, 2), groups=32``) on the FPN levels P3-P6 of an 800x1333 image, this prints
interleaved median times of a training step (forward + backward) and of inference (BN folded
with :meth:`SKAttention.fold_bn`; GN as it is), GN over BN, measured in the same run.
"""
import argparse
import math

import torch

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.utils.benchmark import interleaved

NORMS = {'BN': dict(type='BN'), 'GN': dict(type='GN', num_groups=32)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=2, help='images per batch (per GPU)')
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args()


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f'SK paper preset, gate=True, {args.channels} channels, batch {args.batch}, '
          f'{device}, {torch.get_num_threads()} threads; ms = median of {args.rounds} '
          f'interleaved rounds')
    print(f'{"level":>6} {"shape":>18} {"train BN":>9} {"train GN":>9} {"GN/BN":>6} '
          f'{"infer BN":>9} {"infer GN":>9} {"GN/BN":>6}')
    for stride in (8, 16, 32, 64):
        shape = (args.batch, args.channels, math.ceil(800 / stride), math.ceil(1333 / stride))
        x = torch.randn(shape, device=device)
        blocks = {
            name: SKAttention(args.channels, kernels=(3, 3), dilations=(1, 2), groups=32,
                              norm_cfg=cfg, gate=True).to(device)
            for name, cfg in NORMS.items()
        }
        for block in blocks.values():
            torch.nn.init.uniform_(block.gate, 0.1, 0.9)  # a trained gate: every op counts

        def train_step(block):
            def run():
                block.train()
                block(x).sum().backward()
            return run

        def infer(block):
            def run():
                with torch.no_grad():
                    block(x)
            return run

        train = interleaved({k: train_step(b) for k, b in blocks.items()}, args.rounds, device)
        blocks['BN'].eval().fold_bn()
        blocks['GN'].eval()
        inference = interleaved({k: infer(b) for k, b in blocks.items()}, args.rounds, device)
        print(f'{"P" + str(int(math.log2(stride))):>6} {str(shape[2:]):>18} '
              f'{train["BN"]:9.2f} {train["GN"]:9.2f} {train["GN"] / train["BN"]:6.2f} '
              f'{inference["BN"]:9.2f} {inference["GN"]:9.2f} '
              f'{inference["GN"] / inference["BN"]:6.2f}')


if __name__ == '__main__':
    main()
