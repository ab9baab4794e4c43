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

from ._running_stats import branch_with_running_stats
from .sk_select import FuseSelectMixin, check_bool, check_int

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
class SKAttention(FuseSelectMixin, BaseModule):
    """Selective Kernel attention block.

    The block runs ``K`` parallel conv-norm-act branches with different receptive fields on the
    input (Split), sums them, pools the sum globally and squeezes it to a ``d``-dimensional
    descriptor with ``d = max(L, in_channels // reduction)`` (Fuse), then predicts one channel
    attention vector per branch, normalises them with a softmax across the ``K`` branches and
    returns the attention-weighted sum of the branch outputs (Select). The output has the shape
    of the input.

    With the default arguments the block is the reference module of the project, parameter for
    parameter: its ``state_dict`` keys are ``convs.{i}.conv.*``, ``convs.{i}.bn.*``, ``fc.*`` and
    ``fcs.{i}.*``, so checkpoints of the reference implementation load with ``strict=True``.
    The branch convolutions keep the reference's bias for that reason.

    Cost: the branch maps are never stacked and ``U`` is never formed, so training keeps two
    maps per branch for the backward (the reference keeps three); a ReLU rectifies in place and
    the pooling is a sum. Eagerly, pooling, Select and the gate run as one autograd Function
    whose backward writes each branch's gradient in one pass (see
    :class:`~mmdet_sk.models.layers._select_function.FuseSelectFunction`); tracers and
    compilers see the same in plain operators. For inference, :meth:`fold_bn` folds each
    branch's BatchNorm into its convolution. The forward has no data-dependent control flow (``torch.export`` and
    ``torch.compile(fullgraph=True)`` take it whole) and keeps the memory format of its input:
    a channels-last input runs channels-last throughout. The block does not convert an NCHW
    input itself: on CPU the grouped convolutions run faster channels-last, but the
    conversions back cost more than they save.

    One value per channel: a BatchNorm in training mode raises on a map with ``B * H * W == 1``
    (batch 1 on a 1x1 map, e.g. the last stage of a ResNet on a 32x32 image), where it has no
    batch statistics. A backbone whose own norms are frozen (``norm_eval=True``) runs on such
    an input, while the SK block's norms keep training (see
    :func:`~mmdet_sk.models.backbones.plugin_utils.keep_plugins_training`). So that inserting
    the block never makes a network fail on an input it takes without it, a training-mode
    branch BatchNorm (``nn.BatchNorm2d`` and other ``_BatchNorm`` with running statistics)
    normalises such a map with its running statistics, as in eval mode, and leaves them
    unchanged; on every larger map it trains as usual. The choice is made on the input's
    shape only. ``SyncBatchNorm`` is left alone: it gathers its statistics across ranks and
    its collectives must run on every rank.

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
        gate (bool): Blend the output with the input through a zero-initialised per-channel
            gate, ``x + s * (SK(x) - x)``, so that the block starts as the identity (for
            insertion into trained networks). The gate sits after the selection with nothing
            between it and the output: ``s`` gets a gradient at the first step and every other
            weight of the block from the second (a zero scale before a ReLU, or a
            zero-initialised branch, would cut them off; the softmax selection cannot be
            zeroed). ``s = 1`` is the reference block. Train ``s`` without weight decay (the
            shipped configs: ``custom_keys={'.gate': dict(decay_mult=0., lr_mult=10.)}``, chosen
            by a measured pilot, see docs/sk_forms.md). Default: False (the reference block).
        fuse_cfg (dict, optional): The Fuse after the pooling. None: the reference's linear
            ``z = fc(s)``. A dict: the paper's ``z = act(norm(fc(s)))`` (eq. 4), with keys
            ``norm_cfg`` (default ``dict(type='LN')``) and ``act_cfg`` (default
            ``dict(type='ReLU')``), either None to leave it out; the norm's keys are
            ``fuse_norm.*``. The paper uses BatchNorm, but ``s`` is one (B, d) vector per
            image: BN in training has one value per channel at batch 1 (it then normalises
            with its running statistics) and very few values at the small per-GPU batches of
            detection (2 images), and it computes differently in train and eval mode.
            LayerNorm has no batch statistics, works at any batch size and computes the same
            in both modes, hence
            the default; ``dict(type='BN')`` gives the paper's form exactly (batch > 1).
            Default: None (the reference's Fuse, same outputs and keys).
        init_cfg (dict | list[dict], optional): Initialisation config. Default: None, which
            gives every layer PyTorch's default initialisation, as in the reference module.
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
                 gate: bool = False,
                 fuse_cfg: Optional[dict] = None,
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
            check_int('SKAttention', name, value, 1)
        check_bool('SKAttention', 'gate', gate)
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
            act = build_activation_layer(act_cfg)
            if isinstance(act, nn.ReLU):
                # The norm's backward needs its input, not its output, and ReLU's backward
                # needs only its result: rectifying in place spares a map and its allocation.
                act.inplace = True
            self.convs.append(
                nn.Sequential(OrderedDict([('conv', conv), (norm_name, norm), ('relu', act)])))
        # fc, the optional fuse_norm/fuse_act, fcs, softmax, and the selection recording
        # (record_selection, last_selection) read by SKSelectionHook; shared with SKConv.
        self._init_fuse_select('SKAttention', in_channels, self.d, len(kernels), fuse_cfg)
        self.gate = nn.Parameter(torch.zeros(in_channels)) if gate else None

    def init_weights(self) -> None:
        """Initialise the block on its own terms.

        A parent's ``init_weights`` (ResNet applies Kaiming to every ``Conv2d`` it holds) runs
        before its children's, so this method has the last word: without an ``init_cfg`` every
        layer gets PyTorch's default initialisation, exactly as the reference module is born.
        """
        if self.init_cfg is not None:
            super().init_weights()
            return
        self._default_init()

    def branch_weights(self, x: Tensor) -> tuple:
        """Return the branch outputs and their softmax selection weights.

        Args:
            x (Tensor): Input of shape (B, C, H, W).

        Returns:
            tuple[list[Tensor], Tensor]: The ``K`` branch outputs, each (B, C, H, W), and the
            selection weights of shape (K, B, C), which sum to 1 over the first dimension.
        """
        feats = self._branches(x)
        # Fuse: pooled without materialising U, see FuseSelectMixin._selection_weights.
        return feats, self._selection_weights(feats)

    def _branches(self, x: Tensor) -> list:
        """The ``K`` branch outputs of a 4-D input (the Split)."""
        if x.dim() != 4:
            raise ValueError(f'SKAttention expects a 4-D input (B, C, H, W), got shape '
                             f'{tuple(x.shape)}')
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            # The branches keep the spatial size: their norms see one value per channel.
            return [branch_with_running_stats(branch, x) for branch in self.convs]
        return [branch(x) for branch in self.convs]

    def forward(self, x: Tensor) -> Tensor:
        """Select among the branches of ``x``; the output has the shape of ``x``."""
        # Gated: x + s * (out - x), exactly x while s is 0, whatever the branches compute.
        return self._fuse_select(self._branches(x), x)

    def fold_bn(self) -> 'SKAttention':
        """Fold each branch's BatchNorm into its convolution, for inference.

        In eval mode a BatchNorm is the per-channel affine map
        ``y = (x - mean) * gamma / sqrt(var + eps) + beta``, so the convolution before it can
        absorb it: the weight is scaled by ``gamma / sqrt(var + eps)`` per output channel and
        the bias becomes ``(bias - mean) * gamma / sqrt(var + eps) + beta``. The norm is then
        replaced by ``nn.Identity``, which saves one pass over every branch map. The outputs
        equal those of the eval-mode block within floating-point rounding. The ``state_dict``
        loses the norm entries, so fold after loading a checkpoint, and do not train the
        folded block (it has no norm left). Branches folded before are left as they are, and
        ``mmcv.cnn.fuse_conv_bn(block)`` gives the same result.

        Returns:
            SKAttention: The block itself, folded in place.
        """
        if self.training:
            raise RuntimeError('SKAttention.fold_bn() folds the BatchNorm running statistics '
                               'and is only valid in eval mode: call .eval() first')
        for branch in self.convs:
            conv, (norm_name, norm) = branch.conv, list(branch.named_children())[1]
            if isinstance(norm, nn.Identity):
                continue
            is_bn = isinstance(norm, nn.modules.batchnorm._BatchNorm)
            if not (is_bn and norm.running_mean is not None and isinstance(conv, nn.Conv2d)):
                raise TypeError(f'SKAttention.fold_bn() folds a BatchNorm with running '
                                f'statistics into a Conv2d; this branch has '
                                f'{type(conv).__name__} followed by {norm!r}')
            with torch.no_grad():
                scale = torch.rsqrt(norm.running_var + norm.eps)
                shift = -norm.running_mean * scale
                if norm.affine:
                    scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
                conv.bias.copy_(conv.bias * scale + shift)
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            setattr(branch, norm_name, nn.Identity())
        return self
