# Copyright (c) mmdet-sk contributors. All rights reserved.
"""What this package needs from torch that older releases lack, asked in one place.

mmdet-sk runs on torch 2.1 (the newest torch that mmcv 2.1.0's prebuilt ops exist for, hence
the torch of most MMDetection 3.3 environments) as on today's torch. Each function here uses
the newer API where torch has it and the older equivalent where it does not; nothing else in
the package tests torch's version.
"""
import torch
from mmengine.utils import digit_version

TORCH_VERSION = digit_version(torch.__version__)


def torch_load_is_weights_only() -> bool:
    """Whether ``torch.load`` without ``weights_only`` uses the safe loader (torch >= 2.6).

    Before 2.6 the default is the full unpickler, so MMEngine's checkpoints need no
    allow-list; torch < 2.4 has no ``torch.serialization.add_safe_globals`` at all.
    """
    return TORCH_VERSION >= digit_version('2.6.0') and hasattr(torch.serialization,
                                                               'add_safe_globals')


def is_cpu_autocast_enabled() -> bool:
    """Whether CPU autocast is on (``torch.is_autocast_enabled('cpu')`` from torch 2.4)."""
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled()


def is_compiling() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing the caller.

    ``torch.compiler.is_compiling`` from torch 2.3 (True under ``torch.export`` too); before
    that ``torch._dynamo.is_compiling``, which the compiler of those releases evaluates to True
    while it traces.
    """
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()
