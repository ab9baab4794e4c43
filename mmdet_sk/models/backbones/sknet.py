# Copyright (c) mmdet-sk contributors. All rights reserved.
"""SKNet: the ResNet family whose blocks convolve with Selective Kernel units.

The backbones of timm's ImageNet SKNets, in MMDetection's ResNet (as mmdet's ResNeSt is a
ResNet with its own block), so that their trained weights load whole (converted by
``tools/model_converters/timm_sknet2mmdet.py``) and compute what timm computes:

* SKNet-50/101 (``skresnext50_32x4d``, the paper's SKNet-50): ResNeXt 32x4d whose grouped
  ``conv2`` is an SK unit (3x3 and 3x3 dilated by 2, each conv-BN-ReLU; Fuse
  ``fc``-BN-ReLU with ``d = max(32, width / 16)``; softmax Select), and no norm after it.
* SKNet-18/34 (``skresnet18/34``): ResNet basic blocks whose ``conv1`` (which carries the
  stride) is an SK unit with split input (each branch convolves its half of the input
  channels), ``d = max(16, planes / 8)``; ``conv2`` is a plain conv + BN.
"""
from typing import Callable, Optional

from mmdet.models.backbones.resnet import BasicBlock, ResNet
from mmdet.models.backbones.resnext import Bottleneck as ResNeXtBottleneck
from mmdet.models.layers import ResLayer
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.utils import checkpoint as cp

from ..layers.sk_conv import SKConv

#: The SKConv options an SKNet's ``sk_cfg`` may set (the rest follow from the block).
SK_CFG_KEYS = ('branches', 'reduction', 'L', 'split_input', 'fuse_cfg', 'fc_bias')


def build_sk_unit(in_channels: int, out_channels: int, stride: int, dilation: int, groups: int,
                  norm_cfg: dict, sk_cfg: dict) -> SKConv:
    """The 3x3 SK unit of an SKNet block, as timm's ``SelectiveKernel`` with ``keep_3x3``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of every branch.
        dilation (int): Dilation of branch 0 (branch ``i`` has ``dilation * (i + 1)``).
        groups (int): Groups of every branch conv.
        norm_cfg (dict): Norm of the branches and, unless ``sk_cfg`` sets ``fuse_cfg``, of
            the Fuse (``fc``-norm-ReLU).
        sk_cfg (dict): The other :class:`SKConv` options (``reduction``, ``L``,
            ``split_input``, ...).
    """
    cfg = dict(branches=2, fuse_cfg=dict(norm_cfg=norm_cfg, act_cfg=dict(type='ReLU')),
               fc_bias=False)
    cfg.update(sk_cfg)
    return SKConv(in_channels, out_channels, 3, stride=stride, padding=dilation,
                  dilation=dilation, groups=groups, norm_cfg=norm_cfg, **cfg)


def refuse_dcn(dcn: Optional[dict], stage_with_dcn=()) -> None:
    """Raise if ``dcn`` is set: an SKNet block's 3x3 conv is the SK unit, no slot is free."""
    if dcn is not None or any(stage_with_dcn):
        raise ValueError('SKNet: `dcn` has no slot in an SKNet block (its 3x3 conv is the SK '
                         'unit); leave `dcn` and `stage_with_dcn` unset')


def residual_forward(block: nn.Module, inner: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``relu(inner(x))``, ``inner`` under activation checkpointing with ``block.with_cp``."""
    if block.with_cp and x.requires_grad:
        return block.relu(cp.checkpoint(inner, x, use_reentrant=False))
    return block.relu(inner(x))


class SKBottleneck(ResNeXtBottleneck):
    """ResNeXt Bottleneck whose grouped ``conv2`` is an SK unit, with no norm after it.

    The SK unit ends in its Select: each branch is conv-norm-ReLU, so the block has no
    ``norm2``/ReLU after ``conv2`` (as timm's ``SelectiveKernelBottleneck``). The other layers,
    their names (``conv1``, ``bn1``, ``conv3``, ``bn3``, ``downsample``) and the plugins are
    mmdet's ResNeXt Bottleneck's.

    Args:
        inplanes (int): Input channels.
        planes (int): Base channels (the output has ``planes * 4``).
        groups (int): Groups of the SK unit's convs. Default: 1.
        base_width (int): Width of each group at ``base_channels``. Default: 4.
        base_channels (int): Base channels of the first stage. Default: 64.
        sk_cfg (dict, optional): SKConv options, see :func:`build_sk_unit`. Default: None.
        **kwargs: The other arguments of mmdet's Bottleneck (``stride``, ``dilation``,
            ``norm_cfg``, ``with_cp``, ``plugins``, ...); ``dcn`` must be None (``conv2`` is
            the SK unit).
    """

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 groups: int = 1,
                 base_width: int = 4,
                 base_channels: int = 64,
                 sk_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        refuse_dcn(kwargs.get('dcn'))
        super().__init__(inplanes, planes, groups=groups, base_width=base_width,
                         base_channels=base_channels, **kwargs)
        width = self.conv2.out_channels
        self.conv2 = build_sk_unit(width, width, self.conv2_stride, self.dilation, groups,
                                   self.norm_cfg, sk_cfg or {})
        delattr(self, self.norm2_name)

    def forward(self, x: Tensor) -> Tensor:
        """Forward function."""

        def _inner_forward(x):
            out = self.relu(self.norm1(self.conv1(x)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.conv2(out)  # the SK unit: normalised and activated per branch
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = self.norm3(self.conv3(out))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv3_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        return residual_forward(self, _inner_forward, x)


class SKBasicBlock(BasicBlock):
    """ResNet BasicBlock whose ``conv1`` (with the stride) is an SK unit, with no norm after it.

    As timm's ``SelectiveKernelBasic``: SK unit (branches conv-norm-ReLU, Select), then
    ``conv2`` + ``bn2``, the residual sum and ReLU. ``conv2``, ``bn2`` and ``downsample`` keep
    mmdet's BasicBlock names.

    Args:
        inplanes (int): Input channels.
        planes (int): Output channels.
        stride (int): Stride of the SK unit. Default: 1.
        dilation (int): Dilation of the SK unit's branch 0. Default: 1.
        norm_cfg (dict): Norm config. Default: dict(type='BN').
        sk_cfg (dict, optional): SKConv options, see :func:`build_sk_unit`. Default: None.
        **kwargs: The other arguments of mmdet's BasicBlock (``downsample``, ``with_cp``,
            ...); as there, ``dcn`` and ``plugins`` must be None.
    """

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 norm_cfg: dict = dict(type='BN'),
                 sk_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        refuse_dcn(kwargs.get('dcn'))
        if kwargs.pop('plugins', None):
            raise ValueError('SKNet-18/34: `plugins` are not supported in basic blocks (as '
                             "in mmdet's ResNet-18/34); use depth 50 or 101 for plugins")
        super().__init__(inplanes, planes, stride=stride, dilation=dilation, norm_cfg=norm_cfg,
                         **kwargs)
        self.conv1 = build_sk_unit(inplanes, planes, stride, dilation, 1, norm_cfg, sk_cfg or {})
        delattr(self, self.norm1_name)

    def forward(self, x: Tensor) -> Tensor:
        """Forward function."""

        def _inner_forward(x):
            out = self.conv1(x)  # the SK unit: normalised and activated per branch
            out = self.norm2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        return residual_forward(self, _inner_forward, x)


@MODELS.register_module()
class SKNet(ResNet):
    """SKNet backbone (Li et al., CVPR 2019) in the form of timm's ImageNet SKNets.

    A :class:`ResNet` (stem, stages, ``out_indices``, ``frozen_stages``, ``norm_eval``,
    ``with_cp``, ``init_cfg``, ... all as there) whose blocks are :class:`SKBottleneck`
    (depth 50/101: ResNeXt ``groups`` x ``base_width``, 32x4d by default, SK unit in
    ``conv2``) or :class:`SKBasicBlock` (depth 18/34: SK unit with split input in ``conv1``).

    The SK units' norms are trained weights like the rest: ``norm_eval=True`` freezes them
    with every other BatchNorm, and ``frozen_stages`` freezes them with their stage. A timm
    SKNet checkpoint converted by ``tools/model_converters/timm_sknet2mmdet.py`` loads whole
    through ``init_cfg=dict(type='Pretrained', checkpoint=...)``. With no checkpoint the
    SK units start from PyTorch's default initialisation, the rest as in ``ResNet``.

    Args:
        depth (int): 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        groups (int, optional): Groups of the bottleneck's SK unit; None: 32 at depth 50/101.
            Depth 18/34 take only None or 1. Default: None.
        base_width (int, optional): Width per group at ``base_channels``; None: 4 at depth
            50/101. Depth 18/34 take only None or 64. Default: None.
        sk_cfg (dict, optional): SKConv options over the depth's defaults, among
            ``SK_CFG_KEYS``; defaults ``dict(reduction=16, L=32, split_input=False)`` at depth
            50/101 and ``dict(reduction=8, L=16, split_input=True)`` at 18/34, two branches,
            Fuse ``fc``-norm-ReLU with the backbone's ``norm_cfg``, no ``fc`` bias. Default: None.
        **kwargs: The other arguments of :class:`ResNet`; ``dcn`` must be None.

    Example:
        >>> import torch
        >>> from mmdet_sk.models.backbones import SKNet
        >>> model = SKNet(depth=50, out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]
    """

    arch_settings = {
        18: (SKBasicBlock, (2, 2, 2, 2)),
        34: (SKBasicBlock, (3, 4, 6, 3)),
        50: (SKBottleneck, (3, 4, 6, 3)),
        101: (SKBottleneck, (3, 4, 23, 3)),
    }
    bottleneck_sk_cfg = dict(reduction=16, L=32, split_input=False)
    basic_sk_cfg = dict(reduction=8, L=16, split_input=True)

    def __init__(self,
                 depth: int,
                 groups: Optional[int] = None,
                 base_width: Optional[int] = None,
                 sk_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'SKNet: `depth` must be one of {tuple(self.arch_settings)}, '
                             f'got {depth!r}')
        refuse_dcn(kwargs.get('dcn'), kwargs.get('stage_with_dcn', ()))
        if sk_cfg is not None and not isinstance(sk_cfg, dict):
            raise TypeError(f'SKNet: `sk_cfg` must be None or a dict, got {sk_cfg!r}')
        unknown = sorted(set(sk_cfg or {}) - set(SK_CFG_KEYS))
        if unknown:
            raise ValueError(f'SKNet: `sk_cfg` got unknown keys {unknown}; allowed keys are '
                             f'{SK_CFG_KEYS}')
        if self.arch_settings[depth][0] is SKBottleneck:
            self.groups = 32 if groups is None else groups
            self.base_width = 4 if base_width is None else base_width
            defaults = self.bottleneck_sk_cfg
        else:
            if groups not in (None, 1) or base_width not in (None, 64):
                raise ValueError(f'SKNet-{depth}: basic blocks have no `groups` or '
                                 f'`base_width` (got groups={groups!r}, '
                                 f'base_width={base_width!r}); leave them None, or use depth '
                                 f'50 or 101')
            self.groups, self.base_width = 1, 64
            defaults = self.basic_sk_cfg
        self.sk_cfg = dict(defaults, **(sk_cfg or {}))
        super().__init__(depth=depth, **kwargs)

    def make_res_layer(self, **kwargs) -> nn.Module:
        """Build a stage of SK blocks."""
        if kwargs['block'] is SKBottleneck:
            kwargs.update(groups=self.groups, base_width=self.base_width,
                          base_channels=self.base_channels)
        return ResLayer(sk_cfg=self.sk_cfg, **kwargs)

    def train(self, mode: bool = True) -> 'SKNet':
        """As ``ResNet.train`` (``frozen_stages``, ``norm_eval``), returning the module as
        ``nn.Module.train`` does (mmdet's ``ResNet.train`` returns None)."""
        super().train(mode)
        return self
