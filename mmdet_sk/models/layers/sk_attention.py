# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Selective Kernel attention (SKNet, Li et al., CVPR 2019) as an OpenMMLab plugin.

This module imports nothing from ``mmdet``: any OpenMMLab codebase (or plain PyTorch) can use it.
"""
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn

IntSeq = Union[int, Sequence[int]]


def _as_int_tuple(name: str, value: IntSeq) -> tuple:
    """Turn an int or a sequence of ints into a tuple, rejecting anything else."""
    values = (value, ) if isinstance(value, int) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f'SKAttention: `{name}` must be an int or a sequence of ints, '
                        f'got {value!r}')
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise TypeError(f'SKAttention: every entry of `{name}` must be an int, got {value!r}')
    return tuple(values)


@MODELS.register_module()
class SKAttention(BaseModule):
    """Selective Kernel attention block.

    The block runs ``K`` parallel conv-norm-act branches with different receptive fields on the
    input (Split), sums them, pools the sum globally and squeezes it to a ``d``-dimensional
    descriptor with ``d = max(L, in_channels // reduction)`` (Fuse), then predicts one channel
    attention vector per branch, normalises them with a softmax across the ``K`` branches and
    returns the attention-weighted sum of the branch outputs (Select). The output has the shape
    of the input.

    With the default arguments the block is the seed module of the project, parameter for
    parameter: its ``state_dict`` keys are ``convs.{i}.conv.*``, ``convs.{i}.bn.*``, ``fc.*`` and
    ``fcs.{i}.*``, so checkpoints of the reference implementation load with ``strict=True``.
    The branch convolutions keep the seed's bias for that reason.

    Args:
        in_channels (int): Channels of the input (and of the output).
        kernels (int | Sequence[int]): Kernel size of each branch; odd and positive, so that
            ``padding = dilation * (k - 1) // 2`` keeps the spatial size. Default: (1, 3, 5, 7).
        dilations (int | Sequence[int], optional): Dilation of each branch, one per kernel (an
            int applies to all). The SKNet paper builds its "5x5" branch as a 3x3 conv with
            dilation 2: ``kernels=(3, 3), dilations=(1, 2)``. Default: None (all 1).
        reduction (int): Channel reduction ratio of the squeeze step. Default: 16.
        groups (int): Groups of every branch convolution (32 in the SKNet paper).
            ``in_channels`` must be divisible by it. Default: 1.
        L (int): Lower bound of the squeezed width ``d``. Default: 32.
        conv_cfg (dict, optional): Config of the branch convolutions. Default: None (Conv2d).
        norm_cfg (dict): Config of the branch normalisation. Default: dict(type='BN').
        act_cfg (dict): Config of the branch activation. Default: dict(type='ReLU').
        init_cfg (dict | list[dict], optional): Initialisation config. Default: None, which
            gives every layer PyTorch's default initialisation, as in the seed module.
    """

    _abbr_ = 'sk'

    def __init__(self,
                 in_channels: int,
                 kernels: IntSeq = (1, 3, 5, 7),
                 dilations: Optional[IntSeq] = None,
                 reduction: int = 16,
                 groups: int = 1,
                 L: int = 32,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        kernels = _as_int_tuple('kernels', kernels)
        if len(kernels) == 0:
            raise ValueError('SKAttention: `kernels` must name at least one branch kernel '
                             'size, got an empty sequence')
        bad = [k for k in kernels if k < 1 or k % 2 == 0]
        if bad:
            raise ValueError(f'SKAttention: `kernels` must be odd positive ints (1, 3, 5, ...) '
                             f'so that padding keeps the spatial size; got {kernels}')
        if dilations is None:
            dilations = (1, ) * len(kernels)
        elif isinstance(dilations, int) and not isinstance(dilations, bool):
            dilations = (dilations, ) * len(kernels)
        dilations = _as_int_tuple('dilations', dilations)
        if len(dilations) != len(kernels):
            raise ValueError(f'SKAttention: `dilations` needs one entry per kernel: '
                             f'kernels={kernels} has {len(kernels)}, '
                             f'dilations={dilations} has {len(dilations)}')
        if any(d < 1 for d in dilations):
            raise ValueError(f'SKAttention: `dilations` must be positive ints, got {dilations}')
        for name, value in (('in_channels', in_channels), ('groups', groups),
                            ('reduction', reduction), ('L', L)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f'SKAttention: `{name}` must be an int, got {value!r}')
            if value < 1:
                raise ValueError(f'SKAttention: `{name}` must be >= 1, got {value}')
        if in_channels % groups != 0:
            raise ValueError(f'SKAttention: `in_channels` ({in_channels}) must be divisible '
                             f'by `groups` ({groups}); allowed groups are divisors of '
                             f'{in_channels}')

        self.in_channels = in_channels
        self.kernels = kernels
        self.dilations = dilations
        self.reduction = reduction
        self.groups = groups
        self.L = L
        self.d = max(L, in_channels // reduction)

        self.convs = nn.ModuleList()
        for k, dil in zip(kernels, dilations):
            norm_name, norm = build_norm_layer(norm_cfg, in_channels)
            conv = build_conv_layer(
                conv_cfg,
                in_channels,
                in_channels,
                kernel_size=k,
                padding=dil * (k - 1) // 2,
                dilation=dil,
                groups=groups,
                bias=True)
            self.convs.append(
                nn.Sequential(
                    OrderedDict([('conv', conv), (norm_name, norm),
                                 ('relu', build_activation_layer(act_cfg))])))
        self.fc = nn.Linear(in_channels, self.d)
        self.fcs = nn.ModuleList(nn.Linear(self.d, in_channels) for _ in kernels)
        self.softmax = nn.Softmax(dim=0)
        # Set by SKSelectionHook: keep the last selection weights (K, B, C), not feature maps.
        self.record_selection = False
        self.last_selection: Optional[Tensor] = None

    def init_weights(self) -> None:
        """Initialise the block on its own terms.

        A parent's ``init_weights`` (ResNet applies Kaiming to every ``Conv2d`` it holds) runs
        before its children's, so this method has the last word: without an ``init_cfg`` every
        layer gets PyTorch's default initialisation, exactly as the seed module is born.
        """
        if self.init_cfg is not None:
            super().init_weights()
            return
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()
        self._is_init = True

    def branch_weights(self, x: Tensor) -> tuple:
        """Return the branch outputs and their softmax selection weights.

        Args:
            x (Tensor): Input of shape (B, C, H, W).

        Returns:
            tuple[list[Tensor], Tensor]: The ``K`` branch outputs, each (B, C, H, W), and the
            selection weights of shape (K, B, C), which sum to 1 over the first dimension.
        """
        if x.dim() != 4:
            raise ValueError(f'SKAttention expects a 4-D input (B, C, H, W), got shape '
                             f'{tuple(x.shape)}')
        feats = [branch(x) for branch in self.convs]
        # Fuse: the global average of the branch sum equals the sum of the branch averages,
        # which spares materialising U. Pool in fp32 so that low-precision inputs stay exact.
        pooled = feats[0].float().mean((2, 3))
        for feat in feats[1:]:
            pooled = pooled + feat.float().mean((2, 3))
        z = self.fc(pooled.to(self.fc.weight.dtype))
        logits = torch.stack([fc(z) for fc in self.fcs])
        weights = self.softmax(logits.float())
        return feats, weights

    def forward(self, x: Tensor) -> Tensor:
        """Select among the branches of ``x``; the output has the shape of ``x``."""
        feats, weights = self.branch_weights(x)
        if self.record_selection:
            self.last_selection = weights.detach()
        weights = weights.to(feats[0].dtype)[..., None, None]
        out = feats[0] * weights[0]
        for i in range(1, len(feats)):
            out = out + feats[i] * weights[i]
        return out
