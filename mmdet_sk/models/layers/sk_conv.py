# Copyright (c) mmdet-sk contributors. All rights reserved.
"""SKConv: a Selective Kernel unit (SKNet, Li et al., CVPR 2019) that stands in for a conv.

Registered as ``'SKConv'`` in MMEngine's ``MODELS``, where ``mmcv.cnn.build_conv_layer`` looks
conv types up, so it fits every conv slot of OpenMMLab models, e.g. the ``dcn`` slot of
MMDetection's ResNet/ResNeXt Bottleneck::

    ResNet(depth=50, dcn=dict(type='SKConv', gate=True),
           stage_with_dcn=(False, True, True, True))
"""
from typing import Optional, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import Tensor, nn

from ._running_stats import branch_with_running_stats
from .sk_select import FuseSelectMixin, check_bool, check_int



@MODELS.register_module()
class SKConv(FuseSelectMixin, BaseModule):
    """Selective Kernel convolution: the SK unit of SKNet with the interface of a conv.

    Split: ``branches`` convolutions of ``in_channels -> out_channels``, all with kernel
    ``kernel_size``, stride ``stride`` and groups ``groups``; branch ``i`` has dilation
    ``dilation * (i + 1)`` and the padding that gives it the output size of branch 0
    (``padding + dilation * i * (kernel_size - 1) // 2``). With the defaults this is the
    paper's M = 2: a 3x3 conv and a 3x3 conv with dilation 2 (a "5x5"). Each branch is
    conv-norm-act. Fuse: the branch sum is pooled globally and squeezed to
    ``d = max(L, out_channels // reduction)`` channels. Select: a softmax across the branches
    of per-channel attention weights, and the weighted sum of the branch outputs.

    Branch 0's convolution is the conv the unit replaces: its weight is the unit's own
    ``weight`` (and ``bias``), as mmcv's DCN holds ``self.weight``, so a checkpoint of the
    network with a plain conv in the slot (``layerX.Y.conv2.weight`` of a ResNet) loads into
    it by name. SK's own keys (``dilated_convs.*``, ``norms.*``, ``fc.*``, ``fuse_norm.*``,
    ``fcs.*``, ``gate``) keep their initialisation when the checkpoint has none of them.

    Without ``gate`` the unit is the paper's SK unit. In MMDetection's ResNet ``dcn`` slot the
    Bottleneck keeps its ``norm2`` and ReLU after ``conv2``, i.e. after the Select. With
    ``gate=True`` the output is ``conv(x) + s * (SK(x) - conv(x))``, ``conv`` being branch 0's
    plain convolution (before its norm) and ``s`` a per-channel gate initialised to 0: the
    unit computes exactly the replaced conv when inserted (in train and eval mode), so a
    trained network computes what it computed; ``s`` gets gradient at the first step and SK's
    other weights from the second. Train ``s`` without weight decay.

    The SK units of timm's SKNets (``skresnext50_32x4d``, ``skresnet18/34``), which
    :class:`~mmdet_sk.models.backbones.SKNet` loads, are this unit with
    ``fuse_cfg=dict(norm_cfg=dict(type='BN'))`` and ``fc_bias=False``, and for the SK-ResNets
    ``split_input=True``: branch ``i`` convolves its own ``1 / branches`` of the input
    channels (``in_channels // branches`` inputs per branch, consecutive slices).

    For the analysis tools (:mod:`mmdet_sk.analysis`, :class:`~mmdet_sk.engine.SKSelectionHook`)
    the unit describes its branches as :class:`SKAttention` does, with ``kernels`` (all
    ``kernel_size``) and ``dilations`` (``dilation * (i + 1)``), and records its selection
    weights (K, B, C) in ``last_selection`` while ``record_selection`` is True.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Kernel size of every branch; odd. Default: 3.
        stride (int): Stride of every branch. Default: 1.
        padding (int): Padding of branch 0. Default: 1.
        dilation (int): Dilation of branch 0; branch ``i`` has ``dilation * (i + 1)``.
            Default: 1.
        groups (int): Groups of every branch conv (32 in SKNet); divides both channel
            counts. Default: 1.
        bias (bool): Whether branch 0's conv has a bias (the replaced conv's ``bias``); the
            other branches have none, their norm follows. Default: False.
        split_input (bool): Give each branch its own slice of ``in_channels // branches``
            input channels instead of all of them (timm's SK-ResNets). No conv is replaced
            then, so ``gate`` must be False. Default: False.
        branches (int): Number of branches M, >= 1. Default: 2.
        reduction (int): Channel reduction ratio of the Fuse. Default: 16.
        L (int): Lower bound of the squeezed width ``d``. Default: 32.
        fuse_cfg (dict, optional): None: the linear Fuse ``z = fc(s)``; a dict: the paper's
            ``z = act(norm(fc(s)))`` with ``norm_cfg`` (default LN: no batch statistics,
            works at batch 1) and ``act_cfg`` (default ReLU), see :class:`SKAttention`.
            A training BatchNorm there normalises with its running statistics at batch 1.
            Default: None.
        fc_bias (bool): Whether the Fuse's ``fc`` and the Select's ``fcs`` have biases.
            Default: True.
        norm_cfg (dict): Norm of each branch. Default: dict(type='BN').
        act_cfg (dict): Activation of each branch. Default: dict(type='ReLU').
        gate (bool): Start as the replaced conv, see above. Default: False.
        init_cfg (dict | list[dict], optional): Initialisation config. Default: None, which
            gives every layer PyTorch's default initialisation (the gate 0).
    """

    _abbr_ = 'skconv'
    #: The replaced conv's tensors, under the names a checkpoint of the conv has: loaded from
    #: such a checkpoint while SK's own keys keep their initialisation.
    inherited_keys = ('weight', 'bias')

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 3,
                 stride: int = 1,
                 padding: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 bias: bool = False,
                 split_input: bool = False,
                 branches: int = 2,
                 reduction: int = 16,
                 L: int = 32,
                 fuse_cfg: Optional[dict] = None,
                 fc_bias: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 gate: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value, minimum in (('in_channels', in_channels, 1),
                                     ('out_channels', out_channels, 1),
                                     ('kernel_size', kernel_size, 1), ('stride', stride, 1),
                                     ('padding', padding, 0), ('dilation', dilation, 1),
                                     ('groups', groups, 1), ('branches', branches, 1),
                                     ('reduction', reduction, 1), ('L', L, 1)):
            check_int('SKConv', name, value, minimum)
        if kernel_size % 2 == 0:
            raise ValueError(f'SKConv: `kernel_size` must be odd (1, 3, 5, ...) so that the '
                             f'dilated branches keep the output size, got {kernel_size}')
        for name, value in (('bias', bias), ('split_input', split_input), ('gate', gate)):
            check_bool('SKConv', name, value)
        if split_input:
            if gate:
                raise ValueError('SKConv: `gate=True` needs the replaced conv, which a unit with '
                                 '`split_input=True` does not have (each branch sees only its '
                                 'slice of the input); set one of them to False')
            if in_channels % branches:
                raise ValueError(f'SKConv: with `split_input=True`, `in_channels` '
                                 f'({in_channels}) must be divisible by `branches` ({branches})')
        branch_in = in_channels // branches if split_input else in_channels
        if branch_in % groups or out_channels % groups:
            raise ValueError(f'SKConv: the input channels of each branch ({branch_in}) and '
                             f'`out_channels` ({out_channels}) must be divisible by `groups` '
                             f'({groups})')

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
        self.split_input = split_input
        self.branches = branches
        self.reduction = reduction
        self.L = L
        self.d = max(L, out_channels // reduction)
        # Per branch, as SKAttention's: what the analysis tools read (labels ``k3d1``, ...).
        self.kernels = (kernel_size, ) * branches
        self.dilations = tuple(dilation * (i + 1) for i in range(branches))

        # Branch 0: the replaced conv, under its names.
        self.weight = nn.Parameter(
            torch.empty(out_channels, branch_in // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.dilated_convs = nn.ModuleList()
        for i in range(1, branches):
            self.dilated_convs.append(
                nn.Conv2d(
                    branch_in,
                    out_channels,
                    kernel_size,
                    stride=stride,
                    padding=padding + dilation * i * (kernel_size - 1) // 2,
                    dilation=dilation * (i + 1),
                    groups=groups,
                    bias=False))
        self.norms = nn.ModuleList(
            build_norm_layer(norm_cfg, out_channels)[1] for _ in range(branches))
        self.acts = nn.ModuleList()
        for _ in range(branches):
            act = build_activation_layer(act_cfg)
            if isinstance(act, nn.ReLU):
                act.inplace = True  # its input (a norm's output) is not needed by the backward
            self.acts.append(act)
        self._init_fuse_select('SKConv', out_channels, self.d, branches, fuse_cfg, fc_bias)
        self.gate = nn.Parameter(torch.zeros(out_channels)) if gate else None
        self._reset_conv()

    def _reset_conv(self) -> None:
        """PyTorch's default init of branch 0's conv (that of ``nn.Conv2d``)."""
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -fan_in**-0.5, fan_in**-0.5)

    def init_weights(self) -> None:
        """Give every layer PyTorch's default init, unless ``init_cfg`` says otherwise.

        A parent's ``init_weights`` runs before its children's, so a ResNet's Kaiming init of
        its ``Conv2d`` layers does not decide the unit's init.
        """
        if self.init_cfg is not None:
            super().init_weights()
            return
        self._reset_conv()
        self._default_init()

    def conv(self, x: Tensor) -> Tensor:
        """Branch 0's convolution alone: the conv the unit replaces (of branch 0's slice of
        the input with ``split_input``)."""
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """Select among the branches; shape of the output as that of the replaced conv."""
        if x.dim() != 4:
            raise ValueError(f'SKConv expects a 4-D input (B, C, H, W), got shape '
                             f'{tuple(x.shape)}')
        if self.split_input:
            if x.shape[1] != self.in_channels:  # torch.split would give other slices
                raise ValueError(f'SKConv expects {self.in_channels} input channels, got '
                                 f'{x.shape[1]}')
            xs = torch.split(x, self.in_channels // self.branches, dim=1)
        else:
            xs = (x, ) * self.branches
        base = self.conv(xs[0])
        maps = [base] + [conv(xi) for conv, xi in zip(self.dilated_convs, xs[1:])]
        if self.training and base.shape[0] * base.shape[2] * base.shape[3] == 1:
            # One value per channel (batch 1 on a 1x1 map): training BatchNorms would raise;
            # they normalise with their running statistics for this forward instead.
            feats = [branch_with_running_stats((norm, act), y)
                     for y, norm, act in zip(maps, self.norms, self.acts)]
        else:
            feats = [act(norm(y)) for y, norm, act in zip(maps, self.norms, self.acts)]
        # Gated: conv(x) + s * (SK(x) - conv(x)), exactly the conv while s is 0.
        return self._fuse_select(feats, base)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, dilation={self.dilation}, '
                f'groups={self.groups}, branches={self.branches}, d={self.d}, '
                f'split_input={self.split_input}, gate={self.gate is not None}')
