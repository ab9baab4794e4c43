from .amp import BF16OptimWrapper
from .atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend
from .flops import thop_flops

__all__ = ['thop_flops', 'AtomicCheckpointHook', 'AtomicLocalBackend', 'BF16OptimWrapper']
