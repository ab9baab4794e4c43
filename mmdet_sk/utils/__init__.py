from .amp import BF16OptimWrapper
from .atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend

__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'BF16OptimWrapper']
