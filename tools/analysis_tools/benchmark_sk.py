#!/usr/bin/env python
"""Block benchmarks: SK against the reference module, its replaced conv and its floor.

SKAttention against the reference module, SKConv against the conv it replaces, and each SK
form against its floor (its branches alone).

    python tools/analysis_tools/benchmark_sk.py                 # all three, < 12 min on 2 cores
    python tools/analysis_tools/benchmark_sk.py --skconv-only   # SKConv grid only, < 5 min
    python tools/analysis_tools/benchmark_sk.py --no-skconv     # SKAttention grid only, < 5 min
    python tools/analysis_tools/benchmark_sk.py --floor-only    # against the floor, < 3 min
    python tools/analysis_tools/benchmark_sk.py --quick         # tiny grids, seconds
    python tools/analysis_tools/benchmark_sk.py --json out.json

SKAttention: for every preset and input shape it times, in one process and interleaved round
by round:

* ``ref``: the reference module (the SK block the project reproduces), transcribed,
* ``ours``: :class:`SKAttention` with the same weights,
* ``fold``: ours in eval mode with each branch's BatchNorm folded into its conv (inference),
* ``branch``: ours' conv-norm-act branches alone (fold's branches on inference rows),
* ``convs``: the bare branch convolutions alone (the floor),
* ``GC``: MMCV's ContextBlock (GCNet, ratio 1/16) on the same input,

in three modes: ``fwd`` (training-mode forward with autograd recording), ``fwd+bwd`` (the
same plus the gradients of the input and of every parameter) and ``infer`` (eval mode under
``torch.no_grad``). Each time is the median over interleaved repeats. Peak memory is the peak
of bytes held by tensors allocated during one call, above the level at its start: on CUDA from
``torch.cuda.max_memory_allocated``, on CPU from the allocation and free events of PyTorch's CPU
allocator recorded by ``torch.profiler`` (``profile_memory=True``); buffers that oneDNN
allocates for itself are not seen.

SKConv: for the 3x3 ``conv2`` slot of the ResNet-50 (groups 1) and ResNeXt-50 32x4d
(groups 32) Bottlenecks of stages c3-c5 on an 800x1344 input (800x1333 padded to 32, as
MMDetection's preprocessor does), at batch 1 and 2, in the stride-1 slot (every block but the
first) and the stride-2 slot (the first block, on the previous stage's map), it times in the
same three modes, interleaved:

* ``conv``: the plain 3x3 conv the unit replaces (same channels, stride, groups; no bias),
* ``SK``: :class:`SKConv` as the shipped configs build it (M = 2, r 16, L 32, the paper's
  Fuse fc-LN-ReLU, ``gate=True``), with branch 0's weight that of ``conv``,
* ``no gate``: the same unit with ``gate=False`` (the paper's SK unit), same weights,
* ``fold`` (infer rows): ``SK`` in eval mode with the dilated branches' BatchNorms folded into
  their convs (:func:`fold_skconv`, this benchmark's own code, not a feature of
  :class:`SKConv`; the gated unit needs branch 0's raw conv output, so its norm stays).

The slot's ``norm2`` and ReLU follow either, so they are left out. Memory as for SKAttention,
of ``conv`` and ``SK``, but the saved activations count the input (all the conv saves).

Against the floor (``--floor-only``; left out by ``--no-floor``, ``--skconv-only``,
``--no-skconv``): the work every SK unit must run is its conv-norm-act branches, so each form
is timed against them with the same weights, interleaved, training (``fwd+bwd``) and
inference: SKAttention (paper and grouped presets, four map sizes; inference folded), SKConv
(gated, in ResNeXt-50's stride-1 slots) and SKNet-50's c3 and c4 stages against ResNeXt-50
32x4d's. ``portable`` is the same unit with Fuse and Select in plain operators (what
``torch.compile`` and ONNX export see, and how the unit ran before its fused Function). Each
SKAttention and SKConv row also times, alone, every pass over the maps that SK adds to its
floor (pooling, select, and per branch the backward's weight-gradient dot and map gradient)
and its cost per call, which does not scale with the map (SK minus the floor on a 4x4 map of
the same batch and channels; of it, the attention network alone), and sums them against the
measured excess.

Each grid runs its shapes from small to large, in families (a preset; a network). A combo
whose reference fwd+bwd (the reference's; SK's), estimated from the largest shape measured so far
in its family scaled by conv multiply-adds, exceeds ``--max-ref-ms`` (2 s), or that would end
its grid after ``--time-limit`` (250 s per grid), is skipped and listed at the end.
"""
import argparse
import copy
import json
import math
import os
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from mmdet_sk.models.layers import SKConv
from mmdet_sk.models.layers._select_function import channel_affine, channel_dot, weighted_sum
from mmdet_sk.utils.benchmark import measure, trained_like_norms
from mmdet_sk.utils.block_benchmark import (PRESETS, REDUCTION, L, block_calls,
                                            build_block_variants, check_block_outputs,
                                            portable_copy)

PRESET_NOTES = {
    'default': 'SKAttention\'s default: kernels (1, 3, 5, 7), dense',
    'paper': 'SKNet paper: kernels (3, 3), dilations (1, 2), groups 32',
    'depthwise': 'kernels (3, 5), groups = channels',
    'grouped': 'the reference module with group 32: kernels (3, 5), groups 32',
}
GRID_PRESETS = ('default', 'paper', 'depthwise')
# The reference module's own input, then FPN levels P3-P6 (strides 8-64) of a 1333x800 image,
# batch 1 and 8.
FPN_SHAPES = [(b, 256, math.ceil(800 / s), math.ceil(1333 / s)) for s in (8, 16, 32, 64)
              for b in (1, 8)]
SHAPES = [(1, 512, 7, 7)] + FPN_SHAPES
QUICK_SHAPES = [(1, 64, 12, 20), (2, 64, 8, 8)]
MODES = ('fwd', 'fwd+bwd', 'infer')

Shape = Tuple[int, int, int, int]

# SKConv as the shipped configs build it (configs/faster_rcnn_{r50,x50}_skconv_fpn.py).
SKCONV_CFG = dict(branches=2, reduction=16, L=32, fuse_cfg=dict())
# The conv2 slot of the Bottlenecks: (groups, conv2 width in c3, c4, c5).
NETS = {'r50': (1, (128, 256, 512)), 'x50': (32, (256, 512, 1024))}
NET_NOTES = {'r50': 'ResNet-50, groups 1', 'x50': 'ResNeXt-50 32x4d, groups 32'}


def _half(size: int) -> int:
    """Output size of a 3x3 conv with stride 2 and padding 1."""
    return (size - 1) // 2 + 1


def skconv_slots(image: Tuple[int, int] = (800, 1344), batches: Sequence[int] = (1, 2),
                 nets: Sequence[str] = tuple(NETS)) -> List[dict]:
    """The conv2 slots of stages c3-c5 on ``image``: the stride-2 slot of a stage's first
    block (on the previous stage's map) and the stride-1 slot of its other blocks."""
    h, w = image[0] // 4, image[1] // 4  # c2: the stem's stride 4
    slots = []
    for i, stage in enumerate(('c3', 'c4', 'c5')):
        for net in nets:
            groups, widths = NETS[net]
            for stride, (sh, sw) in ((1, (_half(h), _half(w))), (2, (h, w))):
                slots += [dict(net=net, stage=stage, stride=stride, groups=groups,
                               shape=[b, widths[i], sh, sw]) for b in batches]
        h, w = _half(h), _half(w)
    return slots


SKCONV_SLOTS = skconv_slots()
QUICK_SKCONV_SLOTS = [dict(net=net, stage='tiny', stride=stride, groups=NETS[net][0],
                           shape=[1, 64, 16, 16]) for net in NETS for stride in (1, 2)]


def _start_ns(event) -> int:
    """A profiler event's start in ns (torch < 2.2 has only ``start_us``)."""
    return event.start_ns() if hasattr(event, 'start_ns') else event.start_us() * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny grid (for tests)')
    parser.add_argument('--presets', nargs='+', choices=list(PRESETS), default=list(GRID_PRESETS),
                        help='SKAttention presets of the grid against the reference module')
    parser.add_argument('--nets', nargs='+', choices=list(NETS), default=list(NETS),
                        help='networks whose conv2 slots the SKConv grid takes')
    part = parser.add_mutually_exclusive_group()
    part.add_argument('--skconv-only', action='store_true',
                      help='only SKConv against the conv it replaces')
    part.add_argument('--no-skconv', action='store_true',
                      help='only SKAttention against the reference module')
    part.add_argument('--floor-only', action='store_true',
                      help='only SK against its floor (its branches alone)')
    parser.add_argument('--no-floor', action='store_true',
                        help='leave out SK against its floor')
    parser.add_argument('--budget', type=float, default=0.8,
                        help='seconds of timed calls per (preset, shape, mode), at least '
                        '--repeats rounds')
    parser.add_argument('--repeats', type=int, default=3, help='fewest interleaved rounds')
    parser.add_argument('--max-ref-ms', type=float, default=2000.,
                        help='skip a combo whose reference fwd+bwd is estimated above this')
    parser.add_argument('--time-limit', type=float, default=250.,
                        help='seconds: skip a combo estimated to end its grid later than this')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args()


def conv_macs(preset: str, shape: Shape) -> int:
    """Multiply-adds of the branch convolutions, the yardstick for skipping heavy combos."""
    b, c, h, w = shape
    groups = PRESETS[preset]['groups'] or c
    return b * h * w * c * (c // groups) * sum(k * k for k in PRESETS[preset]['kernels'])


def peak_mb(fn: Callable, device: torch.device) -> float:
    """Peak MiB held by tensors allocated during one call, above the level at its start."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # The raw allocator events (the tables aggregate them per operator), in time order.
    events = [(_start_ns(e), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == '[memory]']
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def saved_mb(fn: Callable, keep: Sequence[Tensor]) -> float:
    """MiB of the tensors one training forward saves for backward, those in ``keep`` aside."""
    known = {t.untyped_storage().data_ptr() for t in keep}
    storages = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in known:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def measure_modes(x: Tensor, fns_of: Callable, memory: Callable, device: torch.device,
                  args) -> List[dict]:
    """One row per mode of ``MODES``: the interleaved times of the callables
    ``fns_of(mode, x)`` (``x`` requiring grad but in inference) and ``memory(mode, fns)``."""
    rows = []
    for mode in MODES:
        fns = fns_of(mode, x.requires_grad_(mode != 'infer'))
        ms, rounds = measure(fns, device, args.budget, args.repeats)
        rows.append(dict(mode=mode, ms=ms, rounds=rounds, peak_mb=memory(mode, fns)))
    return rows


def run_combo(preset: str, shape: Shape, device: torch.device, args) -> List[dict]:
    models = build_block_variants(preset, shape[1], device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    check_block_outputs(models, x)

    def memory(mode, fns):
        if mode == 'fwd':
            return {k: saved_mb(fns[k], [x, *models[k].parameters()]) for k in ('ref', 'ours')}
        mine = 'fold' if mode == 'infer' else 'ours'
        return {k: peak_mb(fns[k], device) for k in ('ref', mine)}

    rows = measure_modes(x, lambda mode, xm: block_calls(models, mode, xm, grad), memory, device,
                         args)
    return [dict(preset=preset, shape=list(shape), **r) for r in rows]


def fold_skconv(unit: SKConv) -> SKConv:
    """Fold SKConv's branch BatchNorms into their convs, in place, for inference.

    Benchmark-only: it measures what folding would gain, and stays out of the package. The
    ``fold`` rows of the SKConv grid gain 0-11% over the unfolded unit at inference (fold/SK
    0.89-1.02), too little for :class:`SKConv` to carry a ``fold_bn`` as
    :class:`SKAttention` does.

    The fold of :meth:`SKAttention.fold_bn`: a dilated branch's conv absorbs its norm's affine
    map (and gets a bias) and the norm becomes ``nn.Identity``. Branch 0's norm is folded into
    ``weight`` (and ``bias``) only without the gate: the gated output
    ``conv(x) + s * (SK(x) - conv(x))`` needs branch 0's raw conv.
    """
    if unit.training:
        raise RuntimeError('fold_skconv() folds running statistics: call .eval() first')
    with torch.no_grad():
        for i, norm in enumerate(unit.norms):
            if isinstance(norm, nn.Identity) or (i == 0 and unit.gate is not None):
                continue
            owner = unit if i == 0 else unit.dilated_convs[i - 1]
            scale = torch.rsqrt(norm.running_var + norm.eps)
            shift = -norm.running_mean * scale
            if norm.affine:
                scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
            if owner.bias is not None:
                shift = owner.bias * scale + shift
            owner.weight.mul_(scale.reshape(-1, 1, 1, 1))
            owner.bias = nn.Parameter(shift)
            unit.norms[i] = nn.Identity()
    return unit


def skconv_macs(slot: dict) -> int:
    """Multiply-adds of the replaced conv, the yardstick for skipping heavy combos."""
    b, c, h, w = slot['shape']
    s = slot['stride']
    return b * (h if s == 1 else _half(h)) * (w if s == 1 else _half(w)) * c * (
        c // slot['groups']) * 9


def skconv_build(slot: dict, device: torch.device) -> Dict[str, nn.Module]:
    """The plain conv, SKConv (gated, its gate away from 0) with the conv's weight as branch
    0, the same unit without the gate, their eval copies, and the folded gated unit."""
    c, stride, groups = slot['shape'][1], slot['stride'], slot['groups']
    torch.manual_seed(0)
    sk = SKConv(c, c, 3, stride, 1, groups=groups, gate=True, **SKCONV_CFG)
    trained_like_norms(sk)
    nn.init.uniform_(sk.gate, 0.2, 0.8)  # the timing does not depend on it, the checks do
    nogate = SKConv(c, c, 3, stride, 1, groups=groups, gate=False, **SKCONV_CFG)
    nogate.load_state_dict({k: v for k, v in sk.state_dict().items() if k != 'gate'})
    conv = nn.Conv2d(c, c, 3, stride, 1, groups=groups, bias=False)
    conv.weight.data.copy_(sk.weight.data)
    models = dict(conv=conv, SK=sk, nogate=nogate)
    models.update({f'{k}_eval': copy.deepcopy(v).eval() for k, v in models.items()})
    models['fold'] = fold_skconv(copy.deepcopy(models['SK_eval']))
    return {k: v.to(device) for k, v in models.items()}


def skconv_check(models: Dict[str, nn.Module], x: Tensor) -> None:
    """Fail loudly before timing: ``conv`` is the replaced conv (the gated unit at gate 0
    computes it exactly), ``no gate`` is the gated unit at gate 1, ``fold`` is ``SK``."""
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for mode in ('', '_eval'):
            unit = copy.deepcopy(models['SK' + mode])
            unit.gate.zero_()
            assert torch.equal(unit(x), models['conv' + mode](x)), 'SK at gate 0 != conv'
            unit.gate.fill_(1.)
            torch.testing.assert_close(models['nogate' + mode](x), unit(x), rtol=1e-4,
                                       atol=1e-4)
        torch.testing.assert_close(models['fold'](x), models['SK_eval'](x), rtol=1e-4,
                                   atol=1e-4)


def skconv_calls(models: Dict[str, nn.Module], mode: str, x: Tensor,
                 grad: Tensor) -> Dict[str, Callable]:
    """The timed callables of one mode: conv, SK, no gate (and fold in inference)."""
    if mode == 'infer':
        return {k: _infer_call(models[f'{k}_eval' if k != 'fold' else k], x)
                for k in ('conv', 'SK', 'nogate', 'fold')}

    def train(module):
        inputs = [x] + list(module.parameters())

        def run():
            out = module(x)
            if mode == 'fwd':
                return out
            return torch.autograd.grad([out], inputs, [grad])

        return run

    return {k: train(models[k]) for k in ('conv', 'SK', 'nogate')}


def skconv_combo(slot: dict, device: torch.device, args) -> List[dict]:
    models = skconv_build(slot, device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(slot['shape'], generator=gen).to(device)
    b, c, h, w = slot['shape']
    out = (b, c, h, w) if slot['stride'] == 1 else (b, c, _half(h), _half(w))
    grad = torch.randn(out, generator=gen).to(device)
    skconv_check(models, x)

    def memory(mode, fns):
        if mode == 'fwd':  # the input counted: all that the conv saves
            return {k: saved_mb(fns[k], list(models[k].parameters())) for k in ('conv', 'SK')}
        return {k: peak_mb(fns[k], device) for k in ('conv', 'SK')}

    rows = measure_modes(x, lambda mode, xm: skconv_calls(models, mode, xm, grad), memory,
                         device, args)
    return [dict(slot, **r) for r in rows]


# SK against its floor: the conv-norm-act branches alone, which every SK unit must run.
FLOOR_BLOCKS = [(p, s) for p in ('paper', 'grouped')
                for s in ((1, 256, 32, 32), (2, 256, 32, 32), (2, 256, 64, 64), (1, 256, 100, 168))]
QUICK_FLOOR_BLOCKS = [('paper', (2, 64, 12, 12)), ('grouped', (2, 64, 12, 12))]
# SKConv as the configs build it, in ResNeXt-50's stride-1 conv2 slots (800x1344 input).
FLOOR_SLOTS = [s for s in SKCONV_SLOTS if s['net'] == 'x50' and s['stride'] == 1
               and s['shape'][0] == 1]
QUICK_FLOOR_SLOTS = [s for s in QUICK_SKCONV_SLOTS if s['net'] == 'x50' and s['stride'] == 1]
# SKNet-50's stage against ResNeXt-50 32x4d's: (stage, its input), c3 and c4 of a 512x512 image.
FLOOR_STAGES = [('c3', (1, 256, 128, 128)), ('c4', (1, 512, 64, 64))]
QUICK_FLOOR_STAGES = [('c3', (1, 256, 16, 16))]
FLOOR_MODES = ('fwd+bwd', 'infer')


def _train_call(module: Callable, x: Tensor, grad: Tensor, params: Sequence[Tensor]) -> Callable:
    """Forward and the gradients of ``x`` and ``params`` for the output gradient ``grad``
    (every output of a list, as the floor returns its branch maps)."""
    inputs = [x, *params]

    def run():
        out = module(x)
        outs = out if isinstance(out, list) else [out]
        return torch.autograd.grad(outs, inputs, [grad] * len(outs), allow_unused=True)

    return run


def _infer_call(module: Callable, x: Tensor) -> Callable:
    """``module(x)`` under ``torch.no_grad``."""

    def run():
        with torch.no_grad():
            return module(x)

    return run


def floor_measure(train: Dict[str, Tuple[Callable, nn.Module]],
                  infer: Dict[str, Callable], x: Tensor, grad: Tensor,
                  device: torch.device, args) -> List[dict]:
    """Rows ``fwd+bwd`` and ``infer`` of interleaved times, and the activations each training
    variant saves for backward (``x`` and parameters aside)."""
    rows = []
    xg = x.detach().requires_grad_()
    fns = {k: _train_call(fn, xg, grad, list(m.parameters())) for k, (fn, m) in train.items()}
    ms, rounds = measure(fns, device, args.budget, args.repeats)
    saved = {k: saved_mb(lambda fn=fn: fn(xg), [xg, *m.parameters()])
             for k, (fn, m) in train.items()}
    rows.append(dict(mode='fwd+bwd', ms=ms, rounds=rounds, saved_mb=saved))
    ms, rounds = measure({k: _infer_call(fn, x) for k, fn in infer.items()}, device, args.budget,
                         args.repeats)
    rows.append(dict(mode='infer', ms=ms, rounds=rounds))
    return rows


def branches_of(unit: nn.Module) -> Callable:
    """The floor of an SK unit: its conv-norm-act branches alone, as a list of maps."""
    if isinstance(unit, SKConv):

        def run(x):
            xs = (torch.split(x, unit.in_channels // unit.branches, dim=1)
                  if unit.split_input else (x, ) * unit.branches)
            maps = [unit.conv(xs[0])] + [c(xi) for c, xi in zip(unit.dilated_convs, xs[1:])]
            return [act(norm(y)) for y, norm, act in zip(maps, unit.norms, unit.acts)]

        return run
    return lambda x: [branch(x) for branch in unit.convs]


def pass_costs(unit: nn.Module, x: Tensor, grad: Tensor, device: torch.device,
               args) -> Dict[str, float]:
    """Milliseconds of each pass over the maps that SK adds to its floor, timed alone
    (interleaved) on the unit's own branch maps: per branch ``pool`` (its sum), ``dot`` (the
    selection weight's gradient, :func:`channel_dot`) and ``grad`` (its map gradient,
    :func:`channel_affine`); once ``select`` (the weighted sum into a new map); ``copy``, a
    map's copy, for scale."""
    with torch.no_grad():
        feats = branches_of(unit)(x)
        w = torch.softmax(torch.randn(len(feats), *feats[0].shape[:2], 1, 1), 0).to(x)
        shift = torch.randn(feats[0].shape[:2]).to(x)
    fns = dict(
        copy=lambda: feats[0].clone(),
        pool=lambda: feats[0].sum((2, 3)),
        select=lambda: weighted_sum(feats, w),
        dot=lambda: channel_dot(grad, feats[0], torch.float32),
        grad=lambda: channel_affine(grad, w[0, ..., 0, 0], shift))
    return measure(fns, device, args.budget, args.repeats)[0]


#: The map on which the per-call cost is timed: SK minus its floor there is the part of SK's
#: excess that does not scale with the map (its passes over 16 values per channel are nil).
PER_CALL_MAP = (4, 4)
#: Interleaved rounds of the per-call timings (sub-millisecond calls need many).
PER_CALL_ROUNDS = 100


def per_call_costs(unit: nn.Module, train: Dict[str, Tuple[Callable, nn.Module]],
                   infer: Dict[str, Callable], shape: Shape, device: torch.device,
                   args) -> List[dict]:
    """The cost per call that does not scale with the map, for the ``fwd+bwd`` and ``infer``
    rows: SK and portable minus the floor on a ``PER_CALL_MAP`` map of the same batch and
    channels (interleaved, ``PER_CALL_ROUNDS`` rounds), and on the ``fwd+bwd`` row the
    attention network alone (``fc`` ... softmax, forward and backward, on the pooled (B, C)
    descriptor), which is part of it."""
    gen = torch.Generator().manual_seed(2)
    small = (*shape[:2], *PER_CALL_MAP)
    x = torch.randn(small, generator=gen).to(device)
    grad = torch.randn(small, generator=gen).to(device)
    args = argparse.Namespace(**{**vars(args), 'repeats': max(args.repeats, PER_CALL_ROUNDS)})
    rows = floor_measure(train, infer, x, grad, device, args)
    per_call = [{k: ms[k] - ms['floor'] for k in ('SK', 'portable')}
                for ms in (r['ms'] for r in rows)]
    pooled = torch.randn(shape[:2], generator=gen).to(device).requires_grad_()
    params = [p for m in (unit.fc, unit.fuse_norm, unit.fuse_act, *unit.fcs) if m is not None
              for p in m.parameters()]
    grad_w = torch.randn(len(unit.fcs), *shape[:2], generator=gen).to(device)  # (K, B, C)

    def attend():
        return torch.autograd.grad(unit._weights_from_pooled(pooled), [pooled, *params], grad_w)

    per_call[0]['attention'] = measure(dict(attention=attend), device, args.budget,
                                       args.repeats)[0]['attention']
    return per_call


def floor_block_combo(preset: str, shape: Shape, device: torch.device, args) -> List[dict]:
    models = build_block_variants(preset, shape[1], device)
    ours, fold = models['ours'], models['fold']
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    check_block_outputs(models, x)
    port, port_fold = portable_copy(ours), portable_copy(fold)
    train = dict(floor=(branches_of(ours), ours.convs), SK=(ours, ours), portable=(port, port))
    infer = dict(floor=branches_of(fold), SK=fold, portable=port_fold)
    rows = floor_measure(train, infer, x, grad, device, args)
    rows[0]['passes'] = pass_costs(ours, x, grad, device, args)
    rows[0]['branches'] = len(ours.convs)
    for row, cost in zip(rows, per_call_costs(ours, train, infer, shape, device, args)):
        row['per_call'] = cost
    return [dict(what=f'SKAttention {preset}', shape=list(shape), **r) for r in rows]


def floor_slot_combo(slot: dict, device: torch.device, args) -> List[dict]:
    models = skconv_build(slot, device)
    sk, sk_eval = models['SK'], models['SK_eval']
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(slot['shape'], generator=gen).to(device)
    grad = torch.randn(slot['shape'], generator=gen).to(device)  # stride-1 slots
    skconv_check(models, x)
    port, port_eval = portable_copy(sk), portable_copy(sk_eval)
    floor_params = nn.ParameterList([sk.weight, *sk.dilated_convs.parameters(),
                                     *sk.norms.parameters()])
    train = dict(floor=(branches_of(sk), floor_params), SK=(sk, sk), portable=(port, port))
    infer = dict(floor=branches_of(sk_eval), SK=sk_eval, portable=port_eval)
    rows = floor_measure(train, infer, x, grad, device, args)
    rows[0]['passes'] = pass_costs(sk, x, grad, device, args)
    rows[0]['branches'] = sk.branches
    for row, cost in zip(rows, per_call_costs(sk, train, infer, slot['shape'], device, args)):
        row['per_call'] = cost
    return [dict(what=f'SKConv {slot["net"]} {slot["stage"]}', shape=slot['shape'], **r)
            for r in rows]


def floor_stage_combo(stage: str, shape: Shape, device: torch.device, args) -> List[dict]:
    """SKNet-50's stage against ResNeXt-50 32x4d's, with the weights they share (every conv
    and norm but ResNeXt's ``bn2``, which SKNet's units replace by their branch norms)."""
    from mmdet.models.backbones import ResNeXt

    from mmdet_sk.models.backbones import SKNet
    index = ('c2', 'c3', 'c4', 'c5').index(stage) + 1
    torch.manual_seed(0)
    plain = getattr(ResNeXt(depth=50, groups=32, base_width=4), f'layer{index}')
    sk = getattr(SKNet(depth=50), f'layer{index}')
    trained_like_norms(plain)
    trained_like_norms(sk)
    sk.load_state_dict(plain.state_dict(), strict=False)
    plain, sk = plain.to(device), sk.to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    with torch.no_grad():
        grad = torch.randn(plain(x).shape, generator=gen).to(device)
    port = portable_copy(sk)
    evals = {k: copy.deepcopy(m).eval() for k, m in dict(floor=plain, SK=sk, portable=port).items()}
    train = dict(floor=(plain, plain), SK=(sk, sk), portable=(port, port))
    rows = floor_measure(train, evals, x, grad, device, args)
    return [dict(what=f'SKNet-50 {stage} / ResNeXt-50', shape=list(shape), **r) for r in rows]


FLOOR_LEGEND = """\
floor: SKAttention and SKConv rows: the unit's conv-norm-act branches alone (the work every SK
    unit runs; infer rows: SKAttention folded and its folded branches, SKConv in eval mode);
    SKNet-50 rows: ResNeXt-50 32x4d's stage. Same weights throughout.
SK: the unit as it runs eagerly; portable: the same unit with Fuse and Select in plain
    operators (as torch.compile and ONNX export see it).
MB (fwd+bwd rows): activations saved for backward, input and parameters aside."""
FLOOR_HEADER = (f'{"what":<28}{"input BxCxHxW":<17}{"mode":<8}{"floor ms":>9}{"SK ms":>9}'
                f'{"SK/floor":>9}{"portable":>9}{"/floor":>7} |{"floor MB":>9}{"SK MB":>8}'
                f'{"port MB":>8}')


def floor_line(r: dict) -> str:
    ms, mb = r['ms'], r.get('saved_mb', {})
    return (f'{r["what"]:<28}{"x".join(map(str, r["shape"])):<17}{r["mode"]:<8}'
            f'{fmt(ms["floor"], ".1f", 9)}{fmt(ms["SK"], ".1f", 9)}'
            f'{fmt(ms["SK"] / ms["floor"], ".3f", 9)}{fmt(ms["portable"], ".1f", 9)}'
            f'{fmt(ms["portable"] / ms["floor"], ".3f", 7)} |{fmt(mb.get("floor"), ".1f", 9)}'
            f'{fmt(mb.get("SK"), ".1f", 8)}{fmt(mb.get("portable"), ".1f", 8)}')


def pass_lines(train: dict, infer: dict) -> List[str]:
    """What SK's passes over the maps cost, timed alone, and its cost per call, against the
    excess measured over the floor: training (every pass) and inference (pooling and select)."""
    p, k = train['passes'], train['branches']
    fwd = k * p['pool'] + p['select']
    bwd = k * (p['dot'] + p['grad'])
    call, call_inf = train['per_call'], infer['per_call']
    size = 'x'.join(map(str, PER_CALL_MAP))

    def explained(row, passes, per_call):
        floor = row['ms']['floor']
        return (f'= {(passes + per_call) / floor:.3f} of the floor (SK - floor measured: '
                f'{(row["ms"]["SK"] - floor) / floor:.3f})')

    return [
        f'  passes over a {"x".join(map(str, train["shape"]))} map, ms: copy {p["copy"]:.2f}; '
        f'pool {p["pool"]:.2f}, select {p["select"]:.2f}, dot {p["dot"]:.2f}, grad '
        f'{p["grad"]:.2f}; per call (SK - floor on a {size} map): train {call["SK"]:.2f}, of '
        f'it the attention network {call["attention"]:.2f}; infer {call_inf["SK"]:.2f}',
        f'  train: {k} branches\' passes fwd {fwd:.2f} + bwd {bwd:.2f} + per call '
        f'{call["SK"]:.2f} ' + explained(train, fwd + bwd, call['SK']),
        f'  infer: pool and select {fwd:.2f} + per call {call_inf["SK"]:.2f} ' +
        explained(infer, fwd, call_inf['SK']),
    ]


def floor_summary(rows: List[dict]) -> List[str]:
    """The targets against the floor, judged on this run's rows."""

    def span(values, target):
        if not values:
            return 'not measured'
        ok = max(values) <= target
        return (f'{min(values):.3f}..{max(values):.3f} over {len(values)} '
                f'({"met" if ok else "missed"}: target <= {target})')

    def pick(kind, mode):
        return [r for r in rows if r['what'].startswith(kind) and r['mode'] == mode]

    lines = []
    for kind in ('SKAttention', 'SKConv', 'SKNet-50'):
        train, infer = pick(kind, 'fwd+bwd'), pick(kind, 'infer')
        if not train:
            continue
        lines += [
            f'{kind} fwd+bwd SK/floor: ' + span([r['ms']['SK'] / r['ms']['floor'] for r in train],
                                                1.08) +
            '; portable/floor ' + span([r['ms']['portable'] / r['ms']['floor'] for r in train],
                                       1.08).split(' (')[0],
            f'{kind} infer SK/floor: ' + span([r['ms']['SK'] / r['ms']['floor'] for r in infer],
                                              1.05) +
            '; portable/floor ' + span([r['ms']['portable'] / r['ms']['floor'] for r in infer],
                                       1.05).split(' (')[0],
            f'{kind} saved activations SK/portable: ' +
            span([r['saved_mb']['SK'] / r['saved_mb']['portable'] for r in train], 1.0),
        ]
    return lines


def fmt(value, spec: str, width: int) -> str:
    return f'{value:{spec}}'.rjust(width) if value is not None else '-'.rjust(width)


LEGEND = """\
x ref: the reference's time / that variant's time (above 1: faster than the reference).
sel %: (block - branch) / block, the share of fuse + select; infer rows: fold and its branches.
MB, fwd rows: activations saved for backward (unique storages through saved_tensors_hooks,
    input and parameters aside), ref and ours;
    fwd+bwd rows: peak above the level at the call's start, ref and ours ({peak});
    infer rows: the same peak, ref and fold. ratio: ours (fold) / ref."""
HEADER = (f'{"preset":<10}{"input BxCxHxW":<17}{"mode":<8}{"ref ms":>9}{"ours ms":>9}'
          f'{"x ref":>7}{"fold ms":>9}{"x ref":>7}{"branch ms":>10}{"convs ms":>9}'
          f'{"sel %":>6}{"GC ms":>8} |{"ref MB":>9}{"ours MB":>9}{"ratio":>7}')


def row_line(r: dict) -> str:
    ms, mem = r['ms'], r['peak_mb']
    block = ms['fold'] if r['mode'] == 'infer' else ms['ours']
    fold = ms.get('fold')
    mine = mem.get('fold', mem.get('ours'))
    return (f'{r["preset"]:<10}{"x".join(map(str, r["shape"])):<17}{r["mode"]:<8}'
            f'{fmt(ms["ref"], ".1f", 9)}{fmt(ms["ours"], ".1f", 9)}'
            f'{fmt(ms["ref"] / ms["ours"], ".2f", 7)}{fmt(fold, ".1f", 9)}'
            f'{fmt(fold and ms["ref"] / fold, ".2f", 7)}{fmt(ms["branch"], ".1f", 10)}'
            f'{fmt(ms["convs"], ".1f", 9)}{fmt(100 * (1 - ms["branch"] / block), ".0f", 6)}'
            f'{fmt(ms["GC"], ".2f", 8)} |{fmt(mem.get("ref"), ".1f", 9)}{fmt(mine, ".1f", 9)}'
            f'{fmt(mine and mine / mem["ref"], ".2f", 7)}')


def summary(rows: List[dict]) -> List[str]:
    """The issue's targets, judged on this run's numbers."""

    def pick(preset=None, mode=None, fpn=False):
        return [r for r in rows if (preset is None or r['preset'] == preset)
                and (mode is None or r['mode'] == mode)
                and (not fpn or tuple(r['shape']) in FPN_SHAPES)]

    def span(values, target, higher=True):
        if not values:
            return 'not measured'
        worst = min(values) if higher else max(values)
        ok = worst >= target if higher else worst <= target
        return (f'{min(values):.2f}..{max(values):.2f} over {len(values)} '
                f'({"met" if ok else "missed"}: target {">=" if higher else "<="} {target})')

    def ratio(r, a, b):
        return r['ms'][a] / r['ms'][b]

    def sel(r):
        return 1 - r['ms']['branch'] / r['ms']['fold' if r['mode'] == 'infer' else 'ours']

    def mem(r):
        return r['peak_mb']['ours'] / r['peak_mb']['ref']

    presets = sorted({r['preset'] for r in rows}, key=list(PRESETS).index)
    return [
        'ref/ours fwd+bwd, paper preset, FPN shapes: ' +
        span([ratio(r, 'ref', 'ours') for r in pick('paper', 'fwd+bwd', True)], 1.5),
        'ref/ours, default preset, every shape and mode: ' +
        span([ratio(r, 'ref', 'ours') for r in pick('default')], 1.0),
    ] + [
        f'ref/fold inference, {p} preset: ' +
        span([ratio(r, 'ref', 'fold') for r in pick(p, 'infer')], 2.0) for p in presets
    ] + [
        f'peak memory ours/ref fwd+bwd, {p} preset, FPN shapes: ' +
        span([mem(r) for r in pick(p, 'fwd+bwd', True)], 0.7, higher=False) for p in presets
    ] + [
        'saved activations ours/ref, every row: ' +
        span([mem(r) for r in pick(mode='fwd')], 0.7, higher=False),
        'fuse+select share (sel %), paper preset, every row: ' +
        span([sel(r) for r in pick('paper')], 0.10, higher=False),
    ]


SKCONV_LEGEND = """\
s, g: stride and groups of the slot. SK/conv: SKConv's time / the plain conv's (the slot's
    cost multiple). SK/no gate: the gated unit's time / the ungated one's (the gate's cost).
    fold/SK (infer rows): the unit with its dilated branches' BN folded / the unit as built.
MB as above, conv and SK, except fwd rows: activations saved for backward with the input
    counted (all that the conv saves); infer rows: SK as built, not folded. ratio: SK / conv."""
SKCONV_HEADER = (f'{"slot":<10}{"input BxCxHxW":<16}{"s":>2}{"g":>4}  {"mode":<8}'
                 f'{"conv ms":>9}{"SK ms":>9}{"SK/conv":>8}{"no gate ms":>11}'
                 f'{"SK/no gate":>11}{"fold ms":>9}{"fold/SK":>8} |{"conv MB":>9}'
                 f'{"SK MB":>9}{"ratio":>7}')


def skconv_line(r: dict) -> str:
    ms, mem = r['ms'], r['peak_mb']
    fold = ms.get('fold')
    return (f'{r["net"] + " " + r["stage"]:<10}{"x".join(map(str, r["shape"])):<16}'
            f'{r["stride"]:>2}{r["groups"]:>4}  {r["mode"]:<8}{fmt(ms["conv"], ".1f", 9)}'
            f'{fmt(ms["SK"], ".1f", 9)}{fmt(ms["SK"] / ms["conv"], ".2f", 8)}'
            f'{fmt(ms["nogate"], ".1f", 11)}{fmt(ms["SK"] / ms["nogate"], ".2f", 11)}'
            f'{fmt(fold, ".1f", 9)}{fmt(fold and fold / ms["SK"], ".2f", 8)} |'
            f'{fmt(mem["conv"], ".1f", 9)}{fmt(mem["SK"], ".1f", 9)}'
            f'{fmt(mem["SK"] / mem["conv"], ".2f", 7)}')


def skconv_summary(rows: List[dict]) -> List[str]:
    """Spans of the SKConv ratios over this run's rows (the issue sets no target)."""

    def span(values):
        if not values:
            return 'not measured'
        return f'{min(values):.2f}..{max(values):.2f} over {len(values)}'

    def ms(mode=None, net=None, key='SK', base='conv'):
        return span([r['ms'][key] / r['ms'][base] for r in rows
                     if (mode is None or r['mode'] == mode) and (net is None or r['net'] == net)
                     and key in r['ms']])

    def mb(mode, net):
        return span([r['peak_mb']['SK'] / r['peak_mb']['conv'] for r in rows
                     if r['mode'] == mode and r['net'] == net])

    nets = sorted({r['net'] for r in rows}, key=list(NETS).index)
    return [
        f'SK/conv, {n} ({NET_NOTES[n]}): ' + '; '.join(f'{m} {ms(m, n)}' for m in MODES)
        for n in nets
    ] + [
        'SK/no gate (the gate\'s cost), every row: ' + ms(key='SK', base='nogate'),
        'fold/SK inference (dilated branches\' BN folded), every row: ' +
        ms('infer', key='fold', base='SK'),
    ] + [
        f'memory SK/conv, {n}: saved activations {mb("fwd", n)}; peak fwd+bwd '
        f'{mb("fwd+bwd", n)}; peak infer {mb("infer", n)}' for n in nets
    ]


def run_grid(families: List[List[dict]], macs: Callable, run: Callable, ref: str,
             line: Callable, label: Callable, args) -> Tuple[List[dict], List[dict]]:
    """Run every case of every family, small to large, printing its rows as they come.

    A case is skipped (and returned in the second list) if its ``ref`` fwd+bwd time,
    estimated from the family's largest case so far scaled by ``macs``, exceeds
    ``--max-ref-ms``, or if running it would end the grid after ``--time-limit``.
    """
    rows, skipped, start = [], [], time.perf_counter()
    per_ref = 0.  # seconds the last case took per second of its reference fwd+bwd
    for family in families:
        measured = []  # (MACs, reference fwd+bwd ms) of the cases run so far
        for case in sorted(family, key=macs):
            n = macs(case)
            est = measured[-1][1] * n / measured[-1][0] if measured else 0.
            if est > args.max_ref_ms:
                why = f'above the {args.max_ref_ms / 1e3:g} s cap'
            elif time.perf_counter() - start + per_ref * est / 1e3 > args.time_limit:
                why = f'running it would end the grid after {args.time_limit:g} s'
            else:
                t0 = time.perf_counter()
                combo = run(case)
                ref_ms = combo[1]['ms'][ref]
                per_ref = (time.perf_counter() - t0) * 1e3 / ref_ms
                measured.append((n, ref_ms))
                for r in combo:
                    print(line(r), flush=True)
                rows.extend(combo)
                continue
            skipped.append(dict(case, est_ref_ms=est, why=why))
    for s in skipped:
        print(f'skipped {label(s)}: {ref} fwd+bwd estimated at {s["est_ref_ms"] / 1e3:.1f} s '
              f'from the largest measured shape scaled by conv multiply-adds; {s["why"]}')
    print(f'{len(rows)} rows in {time.perf_counter() - start:.0f} s; load average '
          f'{os.getloadavg()[0]:.2f}')
    return rows, skipped


def run_floor(args, device: torch.device) -> List[dict]:
    """SK against its floor: SKAttention (paper and grouped presets), SKConv (ResNeXt-50
    slots) and SKNet-50's stages against ResNeXt-50's, each with its passes' costs."""
    blocks = QUICK_FLOOR_BLOCKS if args.quick else FLOOR_BLOCKS
    slots = QUICK_FLOOR_SLOTS if args.quick else FLOOR_SLOTS
    stages = QUICK_FLOOR_STAGES if args.quick else FLOOR_STAGES
    print('\nSK against its floor (train: SK/floor <= 1.08; inference: <= 1.05; saved '
          'activations not above the portable unit\'s)')
    print(FLOOR_LEGEND)
    print(FLOOR_HEADER)
    start, rows = time.perf_counter(), []
    combos = ([lambda p=p, s=s: floor_block_combo(p, s, device, args) for p, s in blocks] +
              [lambda s=s: floor_slot_combo(s, device, args) for s in slots] +
              [lambda st=st, s=s: floor_stage_combo(st, s, device, args) for st, s in stages])
    for combo in combos:
        combo_rows = combo()
        for r in combo_rows:
            print(floor_line(r), flush=True)
        if 'passes' in combo_rows[0]:
            print('\n'.join(pass_lines(*combo_rows)), flush=True)
        rows += combo_rows
    print(f'{len(rows)} rows in {time.perf_counter() - start:.0f} s; load average '
          f'{os.getloadavg()[0]:.2f}')
    print('against the floor:')
    for line in floor_summary(rows):
        print('  ' + line)
    return rows


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    slots = QUICK_SKCONV_SLOTS if args.quick else SKCONV_SLOTS
    if args.quick:
        args.budget, args.repeats = 0.05, 2
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'SK block benchmark on {name}: torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, load average at start '
          f'{os.getloadavg()[0]:.2f} (other processes may share the machine)')
    print(f'times: median of interleaved rounds (at least {args.repeats}, about '
          f'{args.budget:g} s per row)')
    peak = ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
            'CPU allocator events\n    from torch.profiler')
    rows, skipped = [], []
    if not (args.skconv_only or args.floor_only):
        print(f'\nSKAttention against the reference module: reduction {REDUCTION}, L {L}; presets:')
        for p in args.presets:
            print(f'  {p:<10}{PRESET_NOTES[p]}')
        print(LEGEND.format(peak=peak))
        print(HEADER)
        rows, skipped = run_grid(
            [[dict(preset=p, shape=list(s)) for s in shapes] for p in args.presets],
            lambda c: conv_macs(c['preset'], c['shape']),
            lambda c: run_combo(c['preset'], tuple(c['shape']), device, args), 'ref',
            row_line, lambda c: f'{c["preset"]} {"x".join(map(str, c["shape"]))}', args)
        print('targets:')
        for line in summary(rows):
            print('  ' + line)
    sk_rows, sk_skipped = [], []
    if not (args.no_skconv or args.floor_only):
        cfg = ', '.join(f'{k} {v}' for k, v in SKCONV_CFG.items())
        print(f'\nSKConv against the plain 3x3 conv it replaces, in the conv2 slot of the '
              f'Bottlenecks of c3-c5\n({"tiny maps" if args.quick else "800x1344 input"}; '
              f'SKConv {cfg} (fc-LN-ReLU), gate=True); nets:')
        for n in args.nets:
            print(f'  {n:<10}{NET_NOTES[n]}')
        print(SKCONV_LEGEND)
        print(SKCONV_HEADER)
        sk_rows, sk_skipped = run_grid(
            [[s for s in slots if s['net'] == n] for n in args.nets], skconv_macs,
            lambda c: skconv_combo(c, device, args), 'SK', skconv_line,
            lambda c: f'{c["net"]} {c["stage"]} stride {c["stride"]} '
            f'{"x".join(map(str, c["shape"]))}', args)
        print('SKConv costs:')
        for line in skconv_summary(sk_rows):
            print('  ' + line)
    floor_rows = []
    if args.floor_only or not (args.skconv_only or args.no_skconv or args.no_floor):
        floor_rows = run_floor(args, device)
    print(f'load average at end {os.getloadavg()[0]:.2f}')
    if args.json:
        meta = dict(device=name, torch=torch.__version__, threads=torch.get_num_threads(),
                    presets={p: PRESETS[p] for p in args.presets}, reduction=REDUCTION, L=L,
                    skconv=SKCONV_CFG, nets={n: NETS[n] for n in args.nets})
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=rows, skipped=skipped,
                           skconv=dict(rows=sk_rows, skipped=sk_skipped), floor=floor_rows),
                      f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
