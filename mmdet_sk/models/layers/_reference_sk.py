# Copyright (c) mmdet-sk contributors. All rights reserved.
"""The reference SKAttention, transcribed as it is: the baseline of the benchmarks.

Private: it exists to measure :class:`SKAttention` against the code the project started from (the reference module),
with the same weights. It is not registered and not exported.
"""
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import Tensor, nn


class ReferenceSKAttention(nn.Module):
    """SKAttention as the reference writes it: stack of the branches, ``U``, ``(w * feats).sum(0)``.

    The one addition is ``dilations`` (default: all 1, the reference module), so that the SKNet
    paper preset (a 3x3 branch dilated by 2) can be measured too; the padding stays the reference's
    ``k // 2``, scaled by the dilation. Parameter names and shapes are the reference's, so a
    :class:`SKAttention` with the same arguments loads this module's ``state_dict`` strictly.

    Args:
        channel (int): Channels of the input. Default: 512.
        kernels (Sequence[int]): Kernel size of each branch. Default: (1, 3, 5, 7).
        reduction (int): Channel reduction ratio of the squeeze step. Default: 16.
        group (int): Groups of every branch convolution. Default: 1.
        L (int): Lower bound of the squeezed width. Default: 32.
        dilations (Sequence[int], optional): Dilation of each branch. Default: None (all 1).
    """

    def __init__(self,
                 channel: int = 512,
                 kernels: Sequence[int] = (1, 3, 5, 7),
                 reduction: int = 16,
                 group: int = 1,
                 L: int = 32,
                 dilations: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        dilations = dilations or (1, ) * len(kernels)
        self.d = max(L, channel // reduction)
        self.convs = nn.ModuleList()
        for k, dil in zip(kernels, dilations):
            conv = nn.Conv2d(
                channel, channel, k, padding=dil * (k // 2), dilation=dil, groups=group)
            self.convs.append(
                nn.Sequential(
                    OrderedDict([('conv', conv), ('bn', nn.BatchNorm2d(channel)),
                                 ('relu', nn.ReLU())])))
        self.fc = nn.Linear(channel, self.d)
        self.fcs = nn.ModuleList(nn.Linear(self.d, channel) for _ in kernels)
        self.softmax = nn.Softmax(dim=0)

    def forward(self, x: Tensor) -> Tensor:
        """Split, fuse and select exactly as the reference does."""
        B, C, H, W = x.size()
        conv_outs = [conv(x) for conv in self.convs]
        feats = torch.stack(conv_outs, 0)  # (K, B, C, H, W)
        U = sum(conv_outs)
        S = U.mean(-1).mean(-1)
        Z = self.fc(S)
        weights = [fc(Z).view(B, C, 1, 1) for fc in self.fcs]
        scale_weight = self.softmax(torch.stack(weights, 0))  # (K, B, C, 1, 1)
        return (scale_weight * feats).sum(0)
