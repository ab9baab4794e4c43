from .plugin_csp_darknet import PluginCSPDarknet
from .plugin_resnet import PluginBasicBlock, PluginResNet

__all__ = ['PluginBasicBlock', 'PluginResNet', 'PluginCSPDarknet']
