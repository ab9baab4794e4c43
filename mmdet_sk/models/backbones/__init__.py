from .plugin_csp_darknet import PluginCSPDarknet
from .plugin_resnet import PluginBasicBlock, PluginResNet
from .plugin_resnext import PluginResNeXt, PluginResNeXtBottleneck
from .sknet import SKBasicBlock, SKBottleneck, SKNet

__all__ = [
    'PluginBasicBlock', 'PluginResNet', 'PluginResNeXt', 'PluginResNeXtBottleneck',
    'PluginCSPDarknet', 'SKBasicBlock', 'SKBottleneck', 'SKNet'
]
