# Copyright (c) mmdet-sk contributors. All rights reserved.
"""CSP backbones (YOLOX's CSPDarknet, RTMDet's CSPNeXt) with ResNet-style ``plugins`` on their
stage outputs."""
from typing import List, Optional

from mmcv.cnn import build_plugin_layer
from mmdet.models.backbones.csp_darknet import CSPDarknet
from mmdet.models.backbones.cspnext import CSPNeXt
from mmdet.registry import MODELS

from .plugin_utils import check_plugins, keep_plugins_training, warn_frozen_plugins


class CSPStagePluginsMixin:
    """``plugins`` for a CSP backbone whose stages are ``nn.Sequential`` (``stage1``, ...).

    Mixed in before the backbone (``class PluginX(CSPStagePluginsMixin, X)``), whose
    ``arch_settings`` rows start with the stage's input and output channels, and which takes
    ``arch``, ``arch_ovewrite`` and ``widen_factor`` as MMDetection's CSPDarknet and CSPNeXt do.

    Each plugin is appended to the stages it is enabled for (``position='after_stage'``), so it
    acts on the stage's output, after the CSP layer. The stem is not a stage. Checkpoints of
    the plain backbone load unchanged; only the plugins' keys (``stage{i}.{n}.*``) are new.
    With ``norm_eval=True`` the plugins of the trained stages train their own norms. Plugins in
    a frozen stage (``1..frozen_stages``) are frozen with it, as everything there is in
    MMDetection (``requires_grad=False``, eval mode), so they never train: a gated SK block
    there stays the identity. Building such a backbone logs one warning naming those stages
    (:func:`warn_frozen_plugins`).

    Args:
        plugins (list[dict], optional): Each a dict with ``cfg`` (the plugin config, built with
            ``in_channels`` set to the stage's output channels), ``position='after_stage'`` and
            optionally ``stages`` (one bool per stage, 4 for P5 and 5 for P6). Default: None.
        **kwargs: The arguments of the backbone.
    """
    positions = ('after_stage', )

    def __init__(self, plugins: Optional[List[dict]] = None, **kwargs) -> None:
        name = type(self).__name__
        arch = kwargs.get('arch_ovewrite') or self.arch_settings[kwargs.get('arch', 'P5')]
        check_plugins(plugins or [], self.positions, name, num_stages=len(arch))
        super().__init__(**kwargs)
        widen = kwargs.get('widen_factor', 1.0)
        self.plugin_layers = []
        self._plugin_stage = []
        for plugin in plugins or []:
            stages = plugin.get('stages') or (True, ) * len(arch)
            for i, enabled in enumerate(stages):
                if not enabled:
                    continue
                stage = getattr(self, f'stage{i + 1}')
                cfg = dict(plugin['cfg'])
                _, layer = build_plugin_layer(
                    cfg, in_channels=int(arch[i][1] * widen), postfix=cfg.pop('postfix', ''))
                stage.append(layer)
                self.plugin_layers.append(layer)
                self._plugin_stage.append(i + 1)
        frozen = sorted({stage for stage in self._plugin_stage if stage <= self.frozen_stages})
        warn_frozen_plugins(name, frozen, self.frozen_stages)

    def init_weights(self) -> None:
        """Initialise as the backbone, then let each plugin initialise itself.

        The stages are plain ``nn.Sequential``, through which MMEngine does not reach a
        plugin's own ``init_weights``; the backbone's own init (Kaiming on every ``Conv2d``)
        reaches the plugins' convs, so each plugin initialises itself after it. With a
        ``Pretrained`` init_cfg the checkpoint has the last word, as in MMEngine.
        """
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        if any(cfg and cfg.get('type') == 'Pretrained' for cfg in cfgs):
            return
        for layer in self.plugin_layers:
            if hasattr(layer, 'init_weights') and not getattr(layer, 'is_init', False):
                layer.init_weights()

    def train(self, mode: bool = True):
        """As the backbone's ``train``; under ``norm_eval`` the trained stages' plugins train."""
        super().train(mode)
        if mode and self.norm_eval:
            keep_plugins_training(
                layer for layer, stage in zip(self.plugin_layers, self._plugin_stage)
                if stage > self.frozen_stages)
        return self


@MODELS.register_module()
class PluginCSPDarknet(CSPStagePluginsMixin, CSPDarknet):
    """mmdet's :class:`CSPDarknet` (YOLOX) that takes ``plugins`` as ResNet does.

    See :class:`CSPStagePluginsMixin` for ``plugins``; the other arguments are
    :class:`CSPDarknet`'s.
    """


@MODELS.register_module()
class PluginCSPNeXt(CSPStagePluginsMixin, CSPNeXt):
    """mmdet's :class:`CSPNeXt` (RTMDet) that takes ``plugins`` as ResNet does.

    See :class:`CSPStagePluginsMixin` for ``plugins``; the other arguments are
    :class:`CSPNeXt`'s. RTMDet checkpoints and the ImageNet CSPNeXt backbones load whole.
    """
