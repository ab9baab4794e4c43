# Copyright (c) mmdet-sk contributors. All rights reserved.
"""The SKAttention block against the reference module, for the benchmarks.

``tools/analysis_tools/benchmark_sk.py`` (on the CPU) and ``tools/misc/gpu_check.py`` (on a
GPU) time the same variants of one block: the reference module (``ref``, the SK block
the project reproduces, transcribed), :class:`SKAttention` with its weights (``ours``), ours
with its BatchNorms folded (``fold``) and MMCV's ContextBlock (``GC``, GCNet).
"""
import copy
from typing import Callable, Dict

import torch
from mmcv.cnn import ContextBlock
from torch import Tensor, nn

from ..models.layers import SKAttention
from ..models.layers._reference_sk import ReferenceSKAttention
from .benchmark import trained_like_norms

#: Block presets: branch kernels, dilations and groups (0: depthwise, groups = channels).
PRESETS = {
    'default': dict(kernels=(1, 3, 5, 7), dilations=(1, 1, 1, 1), groups=1),
    'paper': dict(kernels=(3, 3), dilations=(1, 2), groups=32),
    'depthwise': dict(kernels=(3, 5), dilations=(1, 1), groups=0),
    'grouped': dict(kernels=(3, 5), dilations=(1, 1), groups=32),
}
#: Reduction ratio and smallest width of the attention vector, as in the SKNet paper.
REDUCTION, L = 16, 32


def build_block_variants(preset: str, channels: int,
                         device: torch.device) -> Dict[str, nn.Module]:
    """The variants of one block, on ``device``.

    ``ref`` (the reference module, with trained-like BN statistics), ``ours``
    (:class:`SKAttention` with the reference's weights), ``GC`` (MMCV's ContextBlock, ratio 1/16),
    an eval-mode copy of each (``ref_eval``, ``ours_eval``, ``GC_eval``) and ``fold``
    (``ours_eval`` with its BatchNorms folded, :meth:`SKAttention.fold_bn`).
    """
    p = PRESETS[preset]
    groups = p['groups'] or channels
    torch.manual_seed(0)
    ref = ReferenceSKAttention(channels, p['kernels'], REDUCTION, groups, L, p['dilations'])
    trained_like_norms(ref)  # so that folding has work
    ours = SKAttention(channels, p['kernels'], p['dilations'], REDUCTION, groups, L)
    ours.load_state_dict(ref.state_dict(), strict=True)
    models = dict(ref=ref, ours=ours, GC=ContextBlock(channels, ratio=1. / 16))
    models.update({f'{k}_eval': copy.deepcopy(v).eval() for k, v in models.items()})
    models['fold'] = copy.deepcopy(models['ours_eval']).fold_bn()
    return {k: v.to(device) for k, v in models.items()}


def portable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights) whose SK units run Fuse and Select in plain
    operators, as tracers and compilers see them: no fused autograd Function, no in-place
    select (the block as it was before those)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if hasattr(m, '_fuse_select_portable'):
            m._fuse_select = m._fuse_select_portable
    return model


def block_calls(models: Dict[str, nn.Module], mode: str, x: Tensor,
                grad: Tensor) -> Dict[str, Callable]:
    """The timed callables of one mode (``'fwd'``, ``'fwd+bwd'`` or ``'infer'``), one per
    variant of :func:`build_block_variants`, plus ``branch`` (the conv-norm-act branches alone)
    and ``convs`` (the bare branch convolutions): ``fwd+bwd`` returns the gradients of ``x``
    and of every parameter for the output gradient ``grad``."""
    if mode == 'infer':
        fold = models['fold']
        fns = dict(
            ref=models['ref_eval'],
            ours=models['ours_eval'],
            fold=fold,
            branch=lambda t: [b(t) for b in fold.convs],
            convs=lambda t: [b.conv(t) for b in fold.convs],
            GC=models['GC_eval'])

        def wrap(fn):

            def run():
                with torch.no_grad():
                    return fn(x)

            return run

        return {k: wrap(fn) for k, fn in fns.items()}

    ours = models['ours']
    fns = dict(
        ref=models['ref'],
        ours=ours,
        branch=lambda t: [b(t) for b in ours.convs],
        convs=lambda t: [b.conv(t) for b in ours.convs],
        GC=models['GC'])
    params = dict(ref=models['ref'], ours=ours, branch=ours.convs,
                  convs=nn.ModuleList(b.conv for b in ours.convs), GC=models['GC'])

    def wrap(fn, module):
        inputs = [x] + list(module.parameters())

        def run():
            out = fn(x)
            if mode == 'fwd':
                return out
            outs = out if isinstance(out, list) else [out]
            # autograd.grad, not backward(): no accumulation into .grad between repeats.
            return torch.autograd.grad(outs, inputs, [grad] * len(outs))

        return run

    return {k: wrap(fn, params[k]) for k, fn in fns.items()}


def check_block_outputs(models: Dict[str, nn.Module], x: Tensor) -> None:
    """The variants compute the same block: fail loudly before timing anything if not.

    TF32 is off for the check only: folding changes the weights' rounding, which TF32 would
    magnify beyond the tolerance.
    """
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ref = models['ref'](x)
        torch.testing.assert_close(models['ours'](x), ref, rtol=1e-4, atol=1e-4)
        ref = models['ref_eval'](x)
        torch.testing.assert_close(models['ours_eval'](x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(models['fold'](x), ref, rtol=1e-4, atol=1e-4)
