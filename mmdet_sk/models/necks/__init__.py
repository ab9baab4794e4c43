from .level_plugins import LevelPlugins

__all__ = ['LevelPlugins']
