# Copyright (c) mmdet-sk contributors. All rights reserved.
"""bf16 mixed-precision training that also runs on CPU.

MMEngine 0.10.7's ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU/MUSA device in its constructor
(its loss scaler is ``torch.cuda.amp.GradScaler``), so ``optim_wrapper.type='AmpOptimWrapper'``
and ``tools/train.py --amp`` fail on a CPU-only machine. bfloat16 has the exponent range of
float32, so it needs no loss scaling: autocast alone is bf16 AMP. ``BF16OptimWrapper`` is
that, and works on CPU and GPU alike; ``tools/train.py --amp`` picks it when there is no GPU.

mmcv's CPU kernels of NMS and RoIAlign take float32 only ("expected scalar type Float but
found BFloat16" under CPU autocast). Building the wrapper therefore makes those two ops run in
float32 inside CPU autocast regions, as autocast itself does for PyTorch's float32-only ops:
inputs cast to float32, the op run with autocast off, a floating-point result cast back to
the input's dtype. Outside CPU autocast (CUDA autocast included) they are unchanged.
"""
import functools
import importlib
import inspect
from contextlib import contextmanager
from typing import Callable, Optional, Union

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from .torch_compat import is_cpu_autocast_enabled


# (module, class) of the mmcv ops whose CPU kernels take float32 only; their ``forward`` is
# wrapped (NMS's autograd function: its output is indices; RoIAlign's module: autograd then
# handles the casts around the kernel).
FP32_MMCV_OPS = (('mmcv.ops.nms', 'NMSop'), ('mmcv.ops.roi_align', 'RoIAlign'))


def _fp32_under_cpu_autocast(forward: Callable) -> Callable:
    """Wrap ``forward`` to run in float32 when CPU autocast is on."""

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if not is_cpu_autocast_enabled():
            return forward(*args, **kwargs)
        dtypes = [a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()]
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast('cpu', enabled=False):
            out = forward(*args, **kwargs)
        if dtypes and torch.is_tensor(out) and out.is_floating_point():
            out = out.to(dtypes[0])  # the dtype of the first input, e.g. the feature map
        return out

    wrapped.fp32_under_cpu_autocast = True
    return wrapped


def mmcv_ops_in_fp32_under_cpu_autocast() -> None:
    """Let the ops of :data:`FP32_MMCV_OPS` run inside CPU autocast regions (idempotent)."""
    for module_name, name in FP32_MMCV_OPS:
        cls = getattr(importlib.import_module(module_name), name)
        raw = inspect.getattr_static(cls, 'forward')
        forward = raw.__func__ if isinstance(raw, staticmethod) else raw
        if getattr(forward, 'fp32_under_cpu_autocast', False):
            continue
        wrapped = _fp32_under_cpu_autocast(forward)
        cls.forward = staticmethod(wrapped) if isinstance(raw, staticmethod) else wrapped


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` that runs the forward pass under bf16 autocast.

    Autocast runs convolutions and matrix products in bfloat16 and keeps reductions, losses
    and the parameters (hence the optimizer step) in float32. No gradient scaling is done.
    Building the wrapper lets mmcv's float32-only CPU ops (NMS, RoIAlign) run under CPU
    autocast (see :func:`mmcv_ops_in_fp32_under_cpu_autocast`).

    Args:
        dtype (str | torch.dtype): The autocast dtype; only ``'bfloat16'`` (float16 needs loss
            scaling: use ``AmpOptimWrapper`` on a GPU). Default: 'bfloat16'.
        loss_scale (optional): Accepted and ignored, so that an ``AmpOptimWrapper`` config
            switches to this wrapper by its ``type`` alone. Default: None.
        **kwargs: The arguments of :class:`OptimWrapper` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Optional[object] = None,
                 **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(f'BF16OptimWrapper: `dtype` must be \'bfloat16\', got {dtype!r}; '
                             f'float16 needs loss scaling: use AmpOptimWrapper on a GPU')
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16
        mmcv_ops_in_fp32_under_cpu_autocast()

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context of :class:`OptimWrapper`, plus bf16 autocast."""
        from mmengine.runner.amp import autocast
        with super().optim_context(model), autocast(dtype=self.cast_dtype):
            yield
