# Copyright (c) mmdet-sk contributors. All rights reserved.
"""ResNeXt whose Bottleneck builds its plugins once, for the channels they act on."""
from typing import List, Optional

from mmdet.models.backbones.resnext import Bottleneck as ResNeXtBottleneck
from mmdet.models.backbones.resnext import ResNeXt
from mmdet.registry import MODELS

from .plugin_resnet import PluginResNet
from .plugin_utils import BOTTLENECK_POSITIONS, check_plugins


class PluginResNeXtBottleneck(ResNeXtBottleneck):
    """mmdet's ResNeXt :class:`Bottleneck` that builds each plugin once, with its channels.

    mmdet's ResNeXt Bottleneck lets ResNet's Bottleneck build the plugins for ``planes``
    channels, then deletes them and builds them again for the grouped ``width``
    (``floor(planes * base_width / base_channels) * groups``). Every plugin is thus built
    twice, and one that cannot take ``planes`` channels fails although it would act on
    ``width`` (SKAttention with ``groups=32`` on a 16-plane stage of a narrow ResNeXt).
    Here the parent block is built without plugins and each plugin once afterwards:
    ``after_conv1``/``after_conv2`` plugins get ``width`` channels (``conv2``'s), and
    ``after_conv3`` plugins ``planes * expansion``. The layers, their order and the
    state-dict keys are mmdet's, so checkpoints of ``ResNeXt`` load by the same keys.

    Args:
        inplanes (int): Input channels.
        planes (int): Base channels of the block (the output has ``planes * 4``).
        plugins (list[dict], optional): Each a dict with ``cfg`` and ``position`` in
            ``('after_conv1', 'after_conv2', 'after_conv3')``. Default: None.
        *args, **kwargs: The other arguments of mmdet's ResNeXt Bottleneck (``groups``,
            ``base_width``, ``base_channels``, ``stride``, ``dcn``, ...).
    """
    positions = BOTTLENECK_POSITIONS

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 *args,
                 plugins: Optional[List[dict]] = None,
                 **kwargs) -> None:
        super().__init__(inplanes, planes, *args, plugins=None, **kwargs)
        if plugins is None:
            return
        check_plugins(plugins, self.positions, 'ResNeXt Bottleneck')
        # The bookkeeping of mmdet's Bottleneck, which its forward reads.
        self.with_plugins = True
        self.plugins = plugins
        width = self.conv2.out_channels
        for position, channels in (('after_conv1', width), ('after_conv2', width),
                                   ('after_conv3', self.planes * self.expansion)):
            cfgs = [p['cfg'] for p in plugins if p['position'] == position]
            setattr(self, f'{position}_plugins', cfgs)
            setattr(self, f'{position}_plugin_names', self.make_block_plugins(channels, cfgs))


@MODELS.register_module()
class PluginResNeXt(PluginResNet, ResNeXt):
    """mmdet's :class:`ResNeXt` with the plugin behaviour of :class:`PluginResNet`.

    The blocks are :class:`PluginResNeXtBottleneck`: each plugin is built once, for the
    channels it acts on (``width`` after ``conv1``/``conv2``), so that e.g. SKAttention with
    ``groups=32`` works at every valid ResNeXt width, and an error names the channels the
    plugin actually gets. As in :class:`PluginResNet`, ``plugins`` are checked when the
    backbone is built, the trained stages' plugins train their norms under ``norm_eval=True``,
    and plugins in a frozen stage log a warning. Checkpoints of ``ResNeXt`` load unchanged;
    only the plugins' keys are new.

    Args:
        depth (int): Depth of the ResNeXt, one of 50, 101, 152.
        groups (int): Groups of the 3x3 convs. Default: 1.
        base_width (int): Width of each group at ``base_channels``. Default: 4.
        plugins (list[dict], optional): As for :class:`PluginResNet`. Default: None.
        **kwargs: The other arguments of :class:`ResNeXt` (``base_channels``, ...).
    """
    arch_name = 'ResNeXt'
    arch_settings = {
        depth: (PluginResNeXtBottleneck, stage_blocks)
        for depth, (_, stage_blocks) in ResNeXt.arch_settings.items()
    }
