# Copyright (c) mmdet-sk contributors. All rights reserved.
"""ResNet whose BasicBlock (ResNet-18/34) takes plugins, as mmdet's Bottleneck already does."""
from typing import List, Optional

from mmcv.cnn import build_conv_layer
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.registry import MODELS
from torch import Tensor
from torch.utils import checkpoint as cp

from ..layers.sk_conv import SKConv
from .plugin_utils import (BOTTLENECK_POSITIONS, check_plugins, keep_plugins_training,
                           warn_frozen_plugins)


class PluginBasicBlock(BasicBlock):
    """mmdet's :class:`BasicBlock` with plugins after ``conv1`` and ``conv2``.

    ``after_conv1`` acts on the activated output of the first conv, ``after_conv2`` on the
    normalised output of the second conv, before the residual sum (the place of Bottleneck's
    ``after_conv3``). The layers and their state-dict keys are BasicBlock's, plus the plugins.

    Args:
        inplanes (int): Input channels.
        planes (int): Output channels.
        plugins (list[dict], optional): Each a dict with ``cfg`` and ``position`` in
            ``('after_conv1', 'after_conv2')``. Default: None.
        dcn (dict, optional): Conv config of ``conv2`` (e.g. ``dict(type='SKConv')``), the
            ResNet ``dcn``/``stage_with_dcn`` slot that BasicBlock refuses; ``conv1``, which
            carries the stride, stays a plain conv. Default: None.
        *args, **kwargs: The other arguments of :class:`BasicBlock`.
    """
    positions = ('after_conv1', 'after_conv2')

    # Bottleneck builds and runs its plugins with two helpers that only use ``self``.
    make_block_plugins = Bottleneck.make_block_plugins
    forward_plugin = Bottleneck.forward_plugin

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 *args,
                 plugins: Optional[List[dict]] = None,
                 dcn: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        if dcn is not None:
            if not isinstance(dcn, dict) or 'type' not in dcn:
                raise TypeError(f'BasicBlock: `dcn` must be None or a conv config dict with a '
                                f'`type` (e.g. dict(type=\'SKConv\')), got {dcn!r}')
            # conv2 only (stride 1; conv1 keeps the stride), one per block as in Bottleneck.
            self.conv2 = build_conv_layer(dcn, planes, planes, 3, padding=1, bias=False)
        self.with_dcn = dcn is not None
        plugins = plugins or []
        check_plugins(plugins, self.positions, 'BasicBlock')
        self.after_conv1_plugin_names = self.make_block_plugins(
            planes, [p['cfg'] for p in plugins if p['position'] == 'after_conv1'])
        self.after_conv2_plugin_names = self.make_block_plugins(
            planes, [p['cfg'] for p in plugins if p['position'] == 'after_conv2'])

    def forward(self, x: Tensor) -> Tensor:
        """Forward function."""

        def _inner_forward(x):
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.norm2(self.conv2(out))
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class PluginResNet(ResNet):
    """mmdet's :class:`ResNet` with ``plugins`` checked up front and usable at every depth.

    It is ``ResNet`` with two differences: ResNet-18/34 use :class:`PluginBasicBlock`, so
    ``plugins`` work there too (positions ``after_conv1``/``after_conv2``), and ``plugins``
    is validated when the backbone is built, with errors that name the field and the allowed
    values. Checkpoints of ``ResNet`` load unchanged; only the plugins' keys are new.
    With ``norm_eval=True`` the pretrained BatchNorms stay frozen as in ``ResNet``, while the
    plugins of the trained stages (the stages after ``frozen_stages``) train their own norms
    (see :func:`keep_plugins_training`). Plugins in a frozen stage (``1..frozen_stages``) are
    frozen with it, as everything there is in MMDetection (``requires_grad=False``, eval
    mode), so they never train: a gated SK block there stays the identity. Building such a
    backbone logs one warning naming those stages (:func:`warn_frozen_plugins`).

    Args:
        depth (int): Depth of the ResNet, one of 18, 34, 50, 101, 152.
        plugins (list[dict], optional): As for :class:`ResNet`: each dict has ``cfg``,
            ``position`` and optionally ``stages`` (one bool per stage). Default: None.
        **kwargs: The other arguments of :class:`ResNet`.
    """
    arch_name = 'ResNet'  # for the messages

    def __init__(self, depth: int, plugins: Optional[List[dict]] = None, **kwargs) -> None:
        if depth in self.arch_settings:
            block = self.arch_settings[depth][0]
            positions = (PluginBasicBlock.positions
                         if block is BasicBlock else BOTTLENECK_POSITIONS)
            check_plugins(plugins or [], positions, f'{self.arch_name}-{depth}',
                          num_stages=kwargs.get('num_stages', 4))
        # By keyword: ResNeXt's __init__ (PluginResNeXt) takes groups first.
        super().__init__(depth=depth, plugins=plugins, **kwargs)
        frozen = [i for i, layer_name in enumerate(self.res_layers, 1)
                  if i <= self.frozen_stages and (self._stage_plugins(layer_name)
                                                  or self._stage_skconvs(layer_name))]
        warn_frozen_plugins(f'{type(self).__name__}-{depth}', frozen, self.frozen_stages)

    def make_res_layer(self, **kwargs):
        """Build a stage, with :class:`PluginBasicBlock` in place of BasicBlock."""
        if kwargs['block'] is BasicBlock:
            kwargs['block'] = PluginBasicBlock
        return super().make_res_layer(**kwargs)

    def _stage_plugins(self, layer_name: str) -> list:
        """The plugin modules of the blocks of one stage."""
        return [
            getattr(block, name) for block in getattr(self, layer_name)
            for position in BOTTLENECK_POSITIONS
            for name in getattr(block, f'{position}_plugin_names', [])
        ]

    def _trained_plugins(self) -> list:
        """The plugins (and SKConv units) of the blocks of the stages after ``frozen_stages``."""
        layers = []
        for i, layer_name in enumerate(self.res_layers, 1):
            if i <= self.frozen_stages:
                continue
            layers.extend(self._stage_plugins(layer_name))
            layers.extend(self._stage_skconvs(layer_name))
        return layers

    def _stage_skconvs(self, layer_name: str) -> list:
        """The SKConv units (``dcn=dict(type='SKConv')``) of the blocks of one stage."""
        return [block.conv2 for block in getattr(self, layer_name)
                if isinstance(getattr(block, 'conv2', None), SKConv)]

    def train(self, mode: bool = True) -> 'PluginResNet':
        """As ``ResNet.train``, with the trained stages' plugins training their norms."""
        super().train(mode)
        if mode and self.norm_eval:
            keep_plugins_training(self._trained_plugins())
        return self
