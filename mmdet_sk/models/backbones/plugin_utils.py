# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Up-front checks of ``plugins=[dict(cfg=..., stages=..., position=...)]`` lists."""
from typing import Iterable, Optional, Sequence

from mmengine.registry import MODELS
from torch import nn


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
