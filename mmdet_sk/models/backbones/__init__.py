from .plugin_csp import CSPStagePluginsMixin, PluginCSPDarknet, PluginCSPNeXt
from .plugin_resnet import PluginBasicBlock, PluginResNet
from .plugin_resnext import PluginResNeXt, PluginResNeXtBottleneck
from .sknet import SKBasicBlock, SKBottleneck, SKNet

__all__ = [
    'PluginBasicBlock', 'PluginResNet', 'PluginResNeXt', 'PluginResNeXtBottleneck',
    'CSPStagePluginsMixin', 'PluginCSPDarknet', 'PluginCSPNeXt', 'SKBasicBlock', 'SKBottleneck',
    'SKNet'
]
