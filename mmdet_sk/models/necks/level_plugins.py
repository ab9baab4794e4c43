# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Plugins on the outputs of any neck: the piece that puts SK into FPN, PAFPN and friends."""
from typing import List, Optional, Sequence, Tuple, Union

from mmcv.cnn import build_plugin_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from ..backbones.plugin_utils import check_plugin_cfg


@MODELS.register_module()
class LevelPlugins(BaseModule):
    """Apply a plugin (SKAttention by default) to chosen levels of a multi-level feature tuple.

    MMDetection's necks take no plugins. Rather than copying a neck, attach this module to it
    with :func:`PluginNeck` (``neck=dict(type='PluginNeck', neck=<any neck>, ...)``), which
    keeps the neck's own weights under their own names. A list of configs
    (``neck=[dict(type='FPN', ...), dict(type='LevelPlugins', ...)]``, built as a
    ``Sequential``) works too, but renames the neck's weights to ``neck.0.*``, so checkpoints
    of the plain detector no longer load into its neck. Any neck that returns a tuple of maps
    is served (FPN, PAFPN, YOLOXPAFPN, ...). Each enabled level gets its own plugin instance.

    Args:
        in_channels (int | Sequence[int]): Channels of each level (an int: all levels alike).
        num_levels (int): Number of maps the preceding neck returns.
        levels (Sequence[int], optional): Indices of the levels to transform; the others pass
            through untouched. Default: None (every level).
        plugin (dict): Config of the plugin; ``in_channels`` is set per level.
            Default: dict(type='SKAttention').
        init_cfg (dict | list[dict], optional): Initialisation config. Default: None.
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 num_levels: int,
                 levels: Optional[Sequence[int]] = None,
                 plugin: dict = dict(type='SKAttention'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f'LevelPlugins: `num_levels` must be a positive int (the number '
                             f'of maps the neck returns), got {num_levels!r}')
        if isinstance(in_channels, int):
            in_channels = [in_channels] * num_levels
        if len(in_channels) != num_levels:
            raise ValueError(f'LevelPlugins: `in_channels` has {len(in_channels)} entries for '
                             f'num_levels={num_levels}')
        levels = tuple(range(num_levels)) if levels is None else tuple(levels)
        bad = [lvl for lvl in levels if not 0 <= lvl < num_levels]
        if bad or len(set(levels)) != len(levels):
            raise ValueError(f'LevelPlugins: `levels`={levels} must be distinct indices in '
                             f'0..{num_levels - 1} (the neck returns {num_levels} maps)')
        check_plugin_cfg(plugin, 'LevelPlugins')
        self.in_channels = tuple(in_channels)
        self.num_levels = num_levels
        self.levels = levels
        self.plugins = ModuleList()
        for lvl in levels:
            cfg = dict(plugin)
            _, layer = build_plugin_layer(
                cfg, in_channels=in_channels[lvl], postfix=cfg.pop('postfix', ''))
            self.plugins.append(layer)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Transform the chosen levels of ``feats``; return a tuple of the same length."""
        if len(feats) != self.num_levels:
            raise ValueError(f'LevelPlugins was built for {self.num_levels} levels but the '
                             f'neck returned {len(feats)} maps; set `num_levels` to match')
        outs = list(feats)
        for lvl, layer in zip(self.levels, self.plugins):
            outs[lvl] = layer(outs[lvl])
        return tuple(outs)


def _apply_level_plugins(neck: nn.Module, args: tuple, outs: Sequence[Tensor]) -> tuple:
    """Forward hook of :func:`PluginNeck`: the neck's maps through its ``level_plugins``."""
    return neck.level_plugins(outs)


def plugin_neck_levels(neck: dict,
                       in_channels: Optional[Union[int, Sequence[int]]] = None,
                       num_levels: Optional[int] = None) -> tuple:
    """Channels and number of the maps a neck config returns, for :func:`PluginNeck`.

    FPN-like necks state ``out_channels`` and ``num_outs``; YOLOXPAFPN-like ones
    ``out_channels`` and one ``in_channels`` entry per output map. Values given explicitly
    must agree with what the config states; where it states nothing they are required.

    Args:
        neck (dict): The neck's config.
        in_channels (int | Sequence[int], optional): Channels of the maps, if given.
        num_levels (int, optional): Number of maps, if given.

    Returns:
        tuple: ``(in_channels, num_levels)``.

    Raises:
        TypeError | ValueError: Naming the field and the value to set.
    """
    if not isinstance(neck, dict) or 'type' not in neck:
        raise TypeError(f'PluginNeck: `neck` must be a neck config dict with a `type`, '
                        f'got {neck!r}')
    channels = neck.get('out_channels')
    stated = {'in_channels': (channels, 'out_channels') if isinstance(channels, int) else None}
    if isinstance(neck.get('num_outs'), int):
        stated['num_levels'] = (neck['num_outs'], 'num_outs')
    elif isinstance(neck.get('in_channels'), (list, tuple)):
        stated['num_levels'] = (len(neck['in_channels']), 'in_channels (one per map)')
    given = dict(in_channels=in_channels, num_levels=num_levels)
    for name, value in given.items():
        if stated.get(name) is None:
            if value is None:
                raise ValueError(f'PluginNeck: set `{name}`: the neck config '
                                 f'(type={neck["type"]!r}) does not state it')
            continue
        number, field = stated[name]
        if value is None:
            given[name] = number
        elif isinstance(value, int) and value != number:
            raise ValueError(f'PluginNeck: `{name}`={value}, but the neck '
                             f'(type={neck["type"]!r}) gives {number} by its `{field}`; '
                             f'set {name}={number} or leave it unset')
    return given['in_channels'], given['num_levels']


@MODELS.register_module()
def PluginNeck(neck: dict,
               plugin: dict = dict(type='SKAttention'),
               levels: Optional[Sequence[int]] = None,
               in_channels: Optional[Union[int, Sequence[int]]] = None,
               num_levels: Optional[int] = None) -> nn.Module:
    """Build ``neck`` with a plugin on chosen levels of its output, keeping its weight names.

    The neck is built from its own config, unchanged, and returned itself (an ``FPN`` stays an
    ``FPN``), with a :class:`LevelPlugins` child called ``level_plugins`` and a forward hook
    that passes the neck's output through it. The neck's weights keep their names
    (``neck.lateral_convs.0.conv.weight``), so a checkpoint of the plain detector loads into
    the neck whole; the plugins' weights are ``neck.level_plugins.plugins.{i}.*``. The
    config delta is the same for every detector:

    .. code-block:: python

        model = dict(neck=dict(_delete_=True, type='PluginNeck', neck={{_base_.model.neck}},
                               levels=(1, 2, 3, 4), plugin=dict(type='SKAttention', ...)))

    Calling ``neck(feats)`` runs the plugins; ``neck.forward(feats)``, which skips module
    hooks, runs the bare neck.

    Args:
        neck (dict): Config of the neck, e.g. ``dict(type='FPN', ...)``.
        plugin (dict): Config of the plugin; ``in_channels`` is set per level.
            Default: dict(type='SKAttention').
        levels (Sequence[int], optional): Indices of the output maps to transform; the
            others pass through. Default: None (every level).
        in_channels (int | Sequence[int], optional): Channels of each output map. Default:
            None, the neck config's ``out_channels``.
        num_levels (int, optional): Number of maps the neck returns. Default: None, the neck
            config's ``num_outs`` (FPN-like) or the length of its ``in_channels``
            (YOLOXPAFPN-like).

    Returns:
        nn.Module: The neck, with the plugins attached.
    """
    in_channels, num_levels = plugin_neck_levels(neck, in_channels, num_levels)
    plugins = LevelPlugins(in_channels, num_levels, levels=levels, plugin=plugin)
    module = MODELS.build(neck)
    if hasattr(module, 'level_plugins'):
        raise ValueError(f'PluginNeck: the neck {type(module).__name__} already has an '
                         f'attribute `level_plugins`')
    module.add_module('level_plugins', plugins)
    module.register_forward_hook(_apply_level_plugins)
    return module
