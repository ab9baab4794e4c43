# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Operation counting in the convention of ``thop.profile`` (the seed's tool).

The seed document reports SKAttention's cost with ``thop``; MMDetection users count with
MMEngine's ``get_model_complexity_info``. The two conventions differ, so this counter
re-implements thop's per-module rules (thop 0.1.1) with forward hooks, letting the project
check the seed's figure without depending on thop:

* ``Conv*d``: ``in_channels / groups * prod(kernel_size)`` multiply-adds per output element;
  the bias is not counted.
* ``_BatchNorm``: 2 operations per element, doubled when the layer is affine.
* ``Linear``: ``in_features`` multiply-adds per output element; the bias is not counted.
* ``Softmax``: per softmax vector of length n, ``n`` exps, ``n - 1`` adds and ``n`` divides.
* Activations, pooling written as tensor methods and elementwise arithmetic count 0.
"""
import math
from typing import Sequence

import torch
from torch import nn


def _conv(m: nn.modules.conv._ConvNd, x: torch.Tensor, y: torch.Tensor) -> int:
    return m.in_channels // m.groups * math.prod(m.kernel_size) * y.numel()


def _norm(m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, y: torch.Tensor) -> int:
    return 2 * x.numel() * (2 if m.affine else 1)


def _linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> int:
    return m.in_features * y.numel()


def _softmax(m: nn.Softmax, x: torch.Tensor, y: torch.Tensor) -> int:
    n = x.shape[m.dim]
    return x.numel() // n * (3 * n - 1)


_RULES = ((nn.modules.conv._ConvNd, _conv), (nn.modules.batchnorm._BatchNorm, _norm),
          (nn.Linear, _linear), (nn.Softmax, _softmax))


def thop_flops(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Count the operations of one forward of ``model`` as ``thop.profile`` does.

    Args:
        model (nn.Module): The model; it runs once in its current train/eval mode.
        inputs (Sequence[Tensor]): Positional inputs of the forward.

    Returns:
        int: The operation count (multiply-adds for convolutions and linear layers).
    """
    total = 0

    def hook(rule):

        def count(m, args, out):
            nonlocal total
            total += rule(m, args[0], out)

        return count

    handles = []
    for m in model.modules():
        for cls, rule in _RULES:
            if isinstance(m, cls):
                handles.append(m.register_forward_hook(hook(rule)))
                break
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
