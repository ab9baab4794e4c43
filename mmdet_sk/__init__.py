"""mmdet-sk: Selective Kernel attention for OpenMMLab detectors.

Importing the package registers every module of it (``custom_imports=dict(imports=['mmdet_sk'])``).
"""
from . import datasets, engine, models  # noqa: F401
from .utils.checkpoint import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['__version__']
