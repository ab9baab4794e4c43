from .level_plugins import LevelPlugins, PluginNeck, plugin_neck_levels

__all__ = ['LevelPlugins', 'PluginNeck', 'plugin_neck_levels']
