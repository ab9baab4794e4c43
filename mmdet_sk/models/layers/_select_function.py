# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Pooling, Select and the gated blend of an SK unit as one autograd Function.

What every SK unit must run is its branches (conv-norm-act); pooling, Select and the blend
come on top, as passes over the branch maps. With plain autograd the backward of
``out = sum_k w_k * V_k`` (``w_k`` per channel, ``V_k`` the branch maps) and of the pooled
``s = mean(sum_k V_k)`` writes, per branch, one map for ``w_k * dout``, a second pass adds the
broadcast gradient of ``s`` into it, and a product map ``dout * V_k`` is reduced for the
gradient of ``w_k``. :class:`FuseSelectFunction` writes each branch's gradient in one pass
(``w_k * dout`` plus the broadcast gradient of ``s``, :func:`channel_affine`) and reduces
``dout . V_k`` per channel without a product map (:func:`channel_dot`). The small attention network between
``s`` and ``w`` (``fc``, the Fuse's norm and activation, ``fcs``, the softmax) runs once, in
the forward, as ordinary autograd; the Function's backward takes its gradients through it.

Eager only: torch.jit tracing, ONNX export, ``torch.compile`` and ``torch.export`` see the
plain operators instead (:func:`eager_kernels_apply`), which they fuse or export themselves.
"""
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmdet_sk.utils.torch_compat import is_compiling


def eager_kernels_apply() -> bool:
    """Whether the eager kernels of this module may run: False while torch.jit traces or
    scripts, while ONNX exports, or while ``torch.compile`` or ``torch.export`` traces."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    return not (torch.onnx.is_in_onnx_export() or is_compiling())


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp32, fp16 and bf16 maps, float64 for float64 ones."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pool(feats: Sequence[Tensor]) -> Tensor:
    """Global average of the branch sum, (B, C), from the branch sums (``U`` is never formed),
    accumulated in fp32 (float64 for float64 maps) without an fp32 copy of the maps."""
    acc = accumulation_dtype(feats[0].dtype)
    pooled = feats[0].sum((2, 3), dtype=acc)
    for feat in feats[1:]:
        pooled = pooled + feat.sum((2, 3), dtype=acc)
    return pooled / (feats[0].shape[2] * feats[0].shape[3])


def weighted_sum(feats: Sequence[Tensor], weights: Tensor, inplace: bool = False) -> Tensor:
    """``sum_k weights[k] * feats[k]`` in one pass for two branches (``lerp``: the two
    weights sum to 1), else accumulated in place in one output map.

    Args:
        feats (Sequence[Tensor]): The ``K`` branch maps, each (B, C, H, W).
        weights (Tensor): (K, B, C, 1, 1), of the maps' dtype.
        inplace (bool): Write the sum into ``feats[0]`` (no new map) rather than a new map.
            Default: False.
    """
    if len(feats) == 2:
        if inplace:
            return feats[0].lerp_(feats[1], weights[1])
        return torch.lerp(feats[0], feats[1], weights[1])
    out = feats[0].mul_(weights[0]) if inplace else feats[0] * weights[0]
    for feat, weight in zip(feats[1:], weights[1:]):
        out = out.addcmul_(feat, weight)
    return out


def blend(base: Tensor, out: Tensor, gate: Tensor, inplace: bool = False) -> Tensor:
    """``base + gate * (out - base)`` in one pass, into ``out`` if ``inplace``; exactly
    ``base`` where the gate is 0."""
    gate = gate.to(out.dtype)[None, :, None, None]
    if inplace:
        return torch.lerp(base, out, gate, out=out)
    return torch.lerp(base, out, gate)


#: Values below which PyTorch's CPU elementwise operators run on one thread (its grain size).
GRAIN = 32768


def channel_dot(a: Tensor, b: Tensor, acc: torch.dtype) -> Tensor:
    """``(a * b).sum((2, 3))`` of two (B, C, H, W) maps, in ``acc``, without a product map.

    Contiguous fp32/float64 maps on CPU or CUDA: the BatchNorm backward kernel's per-channel
    ``sum(grad * (x - mean)) * invstd`` with mean 0 and invstd 1, on the maps viewed as one
    image of ``B * C`` channels (one fused pass); other maps, and maps small enough for one
    thread (``GRAIN`` values: the kernel is parallel at every size, elementwise operators
    only above it): the product, summed in ``acc``.
    """
    B, C, H, W = a.shape
    if _fused_channel_kernel_applies(a) and a.dtype == b.dtype and b.is_contiguous():
        n = B * C
        stats = a.new_zeros(n), a.new_ones(n)
        dot = torch.ops.aten.native_batch_norm_backward(
            a.view(1, n, H, W), b.view(1, n, H, W), None, None, None, *stats, True, 0.,
            [False, True, False])[1]
        return dot.view(B, C).to(acc)
    return (a * b).sum((2, 3), dtype=acc)


def _fused_channel_kernel_applies(a: Tensor) -> bool:
    """Whether :func:`channel_dot` and :func:`channel_affine` may use the BatchNorm kernels
    on ``a``: a contiguous fp32/float64 map on CPU or CUDA, large enough for several threads."""
    return (a.numel() > GRAIN and a.dtype in (torch.float32, torch.float64)
            and a.device.type in ('cpu', 'cuda') and a.is_contiguous())


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * scale + shift`` of a (B, C, H, W) map and two (B, C) vectors, as a new map.

    One vectorised pass where the BatchNorm kernels apply (an eval-mode BatchNorm with mean 0
    and variance 1 on the map viewed as one image of ``B * C`` channels): ``addcmul`` with two
    broadcast operands runs unvectorised on CPU, at about three times a copy's time.
    """
    B, C, H, W = x.shape
    if _fused_channel_kernel_applies(x):
        n = B * C
        return torch.batch_norm(x.view(1, n, H, W), scale.reshape(n).to(x.dtype),
                                shift.reshape(n).to(x.dtype), x.new_zeros(n), x.new_ones(n),
                                False, 0., 0., False).view(B, C, H, W)
    return torch.addcmul(shift.to(x.dtype)[..., None, None], x,
                         scale.to(x.dtype)[..., None, None])


class FuseSelectFunction(torch.autograd.Function):
    """Pool, attend, select and (optionally) blend with a gate, with a fused backward.

    ``apply(weights_of, num_feats, base, gate, *feats, *params)`` returns ``(out, weights)``:

    * ``pooled = pool(feats)``, ``weights = weights_of(pooled)`` (K, B, C), the attention
      network, recorded as ordinary autograd inside the forward;
    * ``out = sum_k weights[k] * feats[k]``, and with a gate
      ``out = base + gate * (out - base)``;
    * ``weights`` comes back detached (for the selection record), not differentiable.

    ``params`` are the attention network's parameters: their gradients come back through the
    Function. Saved for the backward: the branch maps and ``base``, which the branches' own
    layers keep anyway, and (K, B, C) vectors. The backward is not differentiable again.
    """

    @staticmethod
    def forward(ctx, weights_of: Callable[[Tensor], Tensor], num_feats: int,
                base: Optional[Tensor], gate: Optional[Tensor], *tensors: Tensor):
        feats, params = tensors[:num_feats], tensors[num_feats:]
        pooled = pool(feats)
        with torch.enable_grad():
            leaf = pooled.detach().requires_grad_()
            weights = weights_of(leaf)
        w = weights.detach()
        out = weighted_sum(feats, w.to(feats[0].dtype)[..., None, None])
        if gate is not None:
            out = blend(base, out, gate)
        ctx.save_for_backward(w, base, gate, *feats)
        ctx.graph = (leaf, weights, params)
        ctx.map_size = feats[0].shape[2] * feats[0].shape[3]
        ctx.mark_non_differentiable(w)
        return out, w

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, _):
        w, base, gate, *feats = ctx.saved_tensors
        leaf, weights, params = ctx.graph
        acc = w.dtype
        needs = ctx.needs_input_grad
        dots = torch.stack([channel_dot(grad, f, acc) for f in feats])  # (K, B, C)
        grad_base = grad_gate = None
        if gate is None:
            grad_w, scale = dots, w
        else:
            s = gate.to(acc)
            grad_w, scale = dots * s, w * s
            if needs[3]:  # d/ds of base + s * (sum_k w_k V_k - base), from the dots
                grad_gate = ((w * dots).sum(0) - channel_dot(grad, base, acc)).sum(0)
                grad_gate = grad_gate.to(gate.dtype)
            if needs[2]:
                grad_base = grad * (1 - gate.to(grad.dtype))[None, :, None, None]
        trainable = [p for p in params if p.requires_grad]
        with torch.enable_grad():
            # retain_graph: the outer graph may be run backward again (retain_graph=True).
            grads = torch.autograd.grad(weights, [leaf, *trainable], grad_w, retain_graph=True,
                                        allow_unused=True)
        by_param = dict(zip(map(id, trainable), grads[1:]))
        shift = grads[0] / ctx.map_size  # the pooled sum's gradient, broadcast
        grad_feats: List[Optional[Tensor]] = [
            channel_affine(grad, scale[k], shift) if needs[4 + k] else None
            for k in range(len(feats))
        ]
        return (None, None, grad_base, grad_gate, *grad_feats,
                *(by_param.get(id(p)) for p in params))
