# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Plugins on the outputs of any neck: the piece that puts SK into FPN, PAFPN and friends."""
from typing import List, Optional, Sequence, Tuple, Union

from mmcv.cnn import build_plugin_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from ..backbones.plugin_utils import check_plugin_cfg


@MODELS.register_module()
class LevelPlugins(BaseModule):
    """Apply a plugin (SKAttention by default) to chosen levels of a multi-level feature tuple.

    MMDetection's necks take no plugins. Rather than copying a neck, put this module after it:
    ``neck=[dict(type='FPN', ...), dict(type='LevelPlugins', in_channels=256, ...)]``.
    MMEngine builds a list of configs as a ``Sequential``, which hands the neck's tuple of maps
    to this module (Libra R-CNN chains FPN and BFP the same way), so the neck's own code and
    arguments stay untouched and any neck that returns a tuple of maps is served (FPN, PAFPN,
    YOLOXPAFPN, ...). Each enabled level gets its own plugin instance.

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
