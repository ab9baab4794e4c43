# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Convert timm's ImageNet SKNet weights into an SKNet backbone checkpoint for ``init_cfg``.

    python tools/model_converters/timm_sknet2mmdet.py SRC DST [--arch ARCH]

SRC is a timm state dict as timm's hub files come (``model.safetensors``,
``pytorch_model.bin``) or as ``torch.save(timm_model.state_dict(), ...)`` writes it. DST gets
``{'state_dict': ...}`` with the backbone's own key names, for
``backbone=dict(type='SKNet', ..., init_cfg=dict(type='Pretrained', checkpoint=DST))``.
The tool prints every mapping it applies and every key it leaves out (the ImageNet classifier),
and checks that the result loads whole into the SKNet it names before writing it.
"""
import argparse
import os
import os.path as osp

import torch

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import (TIMM_SKNETS, read_state_dict,
                                                  timm_sknet_to_mmdet)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert a timm SKNet checkpoint (skresnet18/34, skresnext50_32x4d) '
        'into an mmdet-sk SKNet backbone checkpoint')
    parser.add_argument('src', help='timm weights: .safetensors, .bin or .pth')
    parser.add_argument('dst', help='output checkpoint (.pth) for the backbone init_cfg')
    parser.add_argument('--arch', choices=sorted(TIMM_SKNETS),
                        help='the architecture SRC must be (checked); default: detected')
    return parser.parse_args()


def main():
    args = parse_args()
    if not osp.isfile(args.src):
        raise SystemExit(f'timm_sknet2mmdet: no file {args.src}')
    try:
        arch, kwargs, (state_dict, rules, left) = timm_sknet_to_mmdet(
            read_state_dict(args.src), args.arch)
    except ValueError as e:
        raise SystemExit(f'timm_sknet2mmdet: {args.src}: {e}')
    print(f'{args.src}: timm {arch} -> SKNet({", ".join(f"{k}={v}" for k, v in kwargs.items())})')
    for rule, count in rules:
        print(f'  {count:4d} x {rule}')
    print(f"  not converted: {', '.join(sorted(left)) if left else 'nothing'}"
          f'{" (the ImageNet classifier)" if left and all(k.startswith("fc.") for k in left) else ""}')

    model = SKNet(**kwargs)
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f'timm_sknet2mmdet: the converted weights do not fit SKNet: missing '
                         f'{result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}')
    print(f'  loads whole into SKNet: {len(state_dict)} tensors, '
          f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state_dict, 'meta': dict(timm_arch=arch, sknet=kwargs)}, args.dst)
    print(f'saved {args.dst}; in a config: backbone=dict(type=\'SKNet\', '
          f'{", ".join(f"{k}={v}" for k, v in kwargs.items())}, '
          f'init_cfg=dict(type=\'Pretrained\', checkpoint=\'{args.dst}\'))')


if __name__ == '__main__':
    main()
