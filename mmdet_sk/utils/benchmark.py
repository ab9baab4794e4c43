# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Timing shared by the benchmark tools: one call's time, and interleaved rounds."""
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn


def time_ms(fn: Callable, device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on a GPU, the wall clock on a CPU."""
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def interleaved(fns: Dict[str, Callable], rounds: int,
                device: torch.device) -> Dict[str, float]:
    """Median milliseconds of each callable over ``rounds`` rounds that call every one once,
    in an order rotated from round to round."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(time_ms(fns[k], device))
    return {k: statistics.median(v) for k, v in times.items()}


def trained_like_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm of ``model`` random statistics and affine parameters, in place.

    A trained network's norms are far from the fresh 0 / 1 (a fresh mmdet ResNet block ends in
    a zero-initialised norm, an identity that hides mistakes): comparisons and timings of
    equivalent networks use such norms.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model
