# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Up-front checks of ``plugins=[dict(cfg=..., stages=..., position=...)]`` lists."""
import logging
from typing import Iterable, Optional, Sequence

from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import nn

#: The plugin positions of MMDetection's ResNet/ResNeXt Bottleneck.
BOTTLENECK_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def check_plugin_cfg(cfg: dict, where: str) -> None:
    """Check that a plugin ``cfg`` names a registered type.

    Args:
        cfg (dict): The plugin's config, e.g. ``dict(type='SKAttention', ...)``.
        where (str): Where the plugin goes, for the message.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'{where}: a plugin `cfg` must be a dict with a `type`, got {cfg!r}')
    plugin_type = cfg['type']
    if isinstance(plugin_type, str) and MODELS.get(plugin_type) is None:
        raise KeyError(
            f'{where}: plugin type {plugin_type!r} is not registered. Is the package that '
            f"defines it imported (e.g. custom_imports=dict(imports=['mmdet_sk']))? "
            f'Registered types include SKAttention, ContextBlock, GeneralizedAttention, '
            f'NonLocal2d')


def check_plugins(plugins: Sequence[dict],
                  positions: Sequence[str],
                  where: str,
                  num_stages: Optional[int] = None) -> None:
    """Check a backbone's ``plugins`` list before anything is built.

    Args:
        plugins (Sequence[dict]): Each with ``cfg``, ``position`` and optionally ``stages``.
        positions (Sequence[str]): The positions the block offers.
        where (str): The backbone or block, for the messages.
        num_stages (int, optional): When given, ``stages`` must have this length.
    """
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'{where}: `plugins` must be a list of dicts, got {plugins!r}')
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or 'cfg' not in plugin:
            raise TypeError(f'{where}: plugins[{i}] must be a dict with `cfg` and '
                            f'`position`, got {plugin!r}')
        position = plugin.get('position')
        if position not in positions:
            raise ValueError(f'{where}: plugins[{i}].position={position!r} is not a position '
                             f'of this block; allowed: {", ".join(positions)}')
        stages = plugin.get('stages')
        if num_stages is not None and stages is not None and len(stages) != num_stages:
            raise ValueError(f'{where}: plugins[{i}].stages={tuple(stages)} has '
                             f'{len(stages)} entries; it needs one bool per stage '
                             f'({num_stages})')
        check_plugin_cfg(plugin['cfg'], f'{where} plugins[{i}]')


def keep_plugins_training(plugins: Iterable[nn.Module]) -> None:
    """Put ``plugins`` back in training mode after a backbone's ``norm_eval`` froze them.

    With ``norm_eval=True`` (MMDetection's ResNet configs), a backbone's ``train()`` puts every
    BatchNorm it holds in eval mode, the plugins' too: their running statistics would then
    stay at their initial 0 / 1 for the whole run, while the pretrained norms they are meant
    to protect have statistics of their own. The plugins are new layers: their norms train.
    """
    for plugin in plugins:
        plugin.train()


def warn_frozen_plugins(where: str, stages: Sequence[int], frozen_stages: int) -> None:
    """Warn once that plugins sit in stages that ``frozen_stages`` freezes.

    MMDetection's backbones freeze the stem and stages ``1..frozen_stages`` whole: every
    parameter there, the plugins' included, gets ``requires_grad=False`` and the stage stays in
    eval mode. A plugin there never trains: a gated SKAttention stays the identity, an ungated
    one keeps its random initialisation. Frozen means frozen, as in MMDetection, so the
    plugins are not unfrozen; one warning names the stages.

    Args:
        where (str): The backbone, for the message.
        stages (Sequence[int]): The 1-based stages that hold plugins and are frozen.
        frozen_stages (int): The backbone's ``frozen_stages``.
    """
    if not stages:
        return
    names = ', '.join(str(s) for s in stages)
    print_log(
        f'{where}: plugins in stage(s) {names} are frozen by frozen_stages={frozen_stages} '
        f'(requires_grad=False, eval mode) and will not train: a gated SKAttention there '
        f'stays the identity, a gated SKConv the conv it replaced. Enable plugins (or '
        f'stage_with_dcn) only in stages after {frozen_stages} (e.g. '
        f'stages=(False, True, True, True) with frozen_stages=1) or lower frozen_stages.',
        logger='current',
        level=logging.WARNING)
