"""mmdet-sk: Selective Kernel attention for OpenMMLab detectors.

Importing the package registers every module of it (``custom_imports=dict(imports=['mmdet_sk'])``).
"""
from . import models  # noqa: F401
from .version import __version__

__all__ = ['__version__']
