#!/usr/bin/env python
"""Block-level benchmark of SKAttention against the seed transcription.

    python tools/analysis_tools/benchmark_sk.py                 # full grid, < 5 min on 2 cores
    python tools/analysis_tools/benchmark_sk.py --quick         # tiny grid, seconds
    python tools/analysis_tools/benchmark_sk.py --json out.json

For every preset and input shape it times, in one process and interleaved round by round:

* ``seed``: the seed document's module, transcribed (the reference),
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

Shapes run from small to large. A combo whose reference fwd+bwd, estimated from the largest
shape measured so far scaled by conv multiply-adds, exceeds ``--max-ref-ms`` (2 s), or that
would end the run after ``--time-limit`` (250 s), is skipped and listed at the end.
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
from mmcv.cnn import ContextBlock
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.models.layers._seed_sk import SeedSKAttention

# groups=0 stands for depthwise (groups = channels).
PRESETS = {
    'seed': dict(kernels=(1, 3, 5, 7), dilations=(1, 1, 1, 1), groups=1),
    'paper': dict(kernels=(3, 3), dilations=(1, 2), groups=32),
    'depthwise': dict(kernels=(3, 5), dilations=(1, 1), groups=0),
}
PRESET_NOTES = {
    'seed': 'seed default: kernels (1, 3, 5, 7), dense',
    'paper': 'SKNet paper: kernels (3, 3), dilations (1, 2), groups 32',
    'depthwise': 'kernels (3, 5), groups = channels',
}
REDUCTION, L = 16, 32
# The seed's own input, then FPN levels P3-P6 (strides 8-64) of a 1333x800 image, batch 1 and 8.
FPN_SHAPES = [(b, 256, math.ceil(800 / s), math.ceil(1333 / s)) for s in (8, 16, 32, 64)
              for b in (1, 8)]
SHAPES = [(1, 512, 7, 7)] + FPN_SHAPES
QUICK_SHAPES = [(1, 64, 12, 20), (2, 64, 8, 8)]
MODES = ('fwd', 'fwd+bwd', 'infer')

Shape = Tuple[int, int, int, int]


def _start_ns(event) -> int:
    """A profiler event's start in ns (torch < 2.2 has only ``start_us``)."""
    return event.start_ns() if hasattr(event, 'start_ns') else event.start_us() * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny grid (for tests)')
    parser.add_argument('--presets', nargs='+', choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument('--budget', type=float, default=0.8,
                        help='seconds of timed calls per (preset, shape, mode), at least '
                        '--repeats rounds')
    parser.add_argument('--repeats', type=int, default=3, help='fewest interleaved rounds')
    parser.add_argument('--max-ref-ms', type=float, default=2000.,
                        help='skip a combo whose reference fwd+bwd is estimated above this')
    parser.add_argument('--time-limit', type=float, default=250.,
                        help='seconds: skip a combo estimated to end the run later than this')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the results to this file')
    return parser.parse_args()


def conv_macs(preset: str, shape: Shape) -> int:
    """Multiply-adds of the branch convolutions, the yardstick for skipping heavy combos."""
    b, c, h, w = shape
    groups = PRESETS[preset]['groups'] or c
    return b * h * w * c * (c // groups) * sum(k * k for k in PRESETS[preset]['kernels'])


def build(preset: str, channels: int, device: torch.device) -> Dict[str, nn.Module]:
    """The seed module with non-trivial BN statistics, ours with its weights, and the rest."""
    p = PRESETS[preset]
    groups = p['groups'] or channels
    torch.manual_seed(0)
    seed = SeedSKAttention(channels, p['kernels'], REDUCTION, groups, L, p['dilations'])
    for m in seed.modules():
        if isinstance(m, nn.BatchNorm2d):  # as if trained, so that folding has work to do
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    ours = SKAttention(channels, p['kernels'], p['dilations'], REDUCTION, groups, L)
    ours.load_state_dict(seed.state_dict(), strict=True)
    models = dict(seed=seed, ours=ours, GC=ContextBlock(channels, ratio=1. / 16))
    models.update({f'{k}_eval': copy.deepcopy(v).eval() for k, v in models.items()})
    models['fold'] = copy.deepcopy(models['ours_eval']).fuse_bn()
    return {k: v.to(device) for k, v in models.items()}


def calls(models: Dict[str, nn.Module], mode: str, x: Tensor,
          grad: Tensor) -> Dict[str, Callable]:
    """The timed callables of one mode, one per variant."""
    if mode == 'infer':
        fold = models['fold']
        fns = dict(
            seed=models['seed_eval'],
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
        seed=models['seed'],
        ours=ours,
        branch=lambda t: [b(t) for b in ours.convs],
        convs=lambda t: [b.conv(t) for b in ours.convs],
        GC=models['GC'])
    params = dict(seed=models['seed'], ours=ours, branch=ours.convs,
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


def measure(fns: Dict[str, Callable], device: torch.device, budget: float,
            min_rounds: int) -> Tuple[Dict[str, float], int]:
    """Median milliseconds per variant over interleaved rounds, and the number of rounds."""
    first = {k: time_ms(fn, device) for k, fn in fns.items()}  # warm-up, and the round cost
    rounds = max(min_rounds, min(25, int(budget * 1e3 / sum(first.values()))))
    return interleaved(fns, rounds, device), rounds


def check_outputs(models: Dict[str, nn.Module], x: Tensor) -> None:
    """The variants compute the same block: fail loudly before timing anything if not.

    TF32 is off for the check only: folding changes the weights' rounding, which TF32 would
    magnify beyond the tolerance.
    """
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ref = models['seed'](x)
        torch.testing.assert_close(models['ours'](x), ref, rtol=1e-4, atol=1e-4)
        ref = models['seed_eval'](x)
        torch.testing.assert_close(models['ours_eval'](x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(models['fold'](x), ref, rtol=1e-4, atol=1e-4)


def run_combo(preset: str, shape: Shape, device: torch.device, args) -> List[dict]:
    models = build(preset, shape[1], device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    check_outputs(models, x)
    rows = []
    for mode in MODES:
        xm = x.requires_grad_(mode != 'infer')
        fns = calls(models, mode, xm, grad)
        ms, rounds = measure(fns, device, args.budget, args.repeats)
        if mode == 'fwd':
            mem = {k: saved_mb(fns[k], [x, *models[k].parameters()]) for k in ('seed', 'ours')}
        else:
            mine = 'fold' if mode == 'infer' else 'ours'
            mem = {k: peak_mb(fns[k], device) for k in ('seed', mine)}
        rows.append(dict(preset=preset, shape=list(shape), mode=mode, ms=ms, rounds=rounds,
                         peak_mb=mem))
    return rows


def fmt(value, spec: str, width: int) -> str:
    return f'{value:{spec}}'.rjust(width) if value is not None else '-'.rjust(width)


LEGEND = """\
x seed: seed time / that variant's time (above 1: faster than the seed).
sel %: (block - branch) / block, the share of fuse + select; infer rows: fold and its branches.
MB, fwd rows: activations saved for backward (unique storages through saved_tensors_hooks,
    input and parameters aside), seed and ours;
    fwd+bwd rows: peak above the level at the call's start, seed and ours ({peak});
    infer rows: the same peak, seed and fold. ratio: ours (fold) / seed."""
HEADER = (f'{"preset":<10}{"input BxCxHxW":<17}{"mode":<8}{"seed ms":>9}{"ours ms":>9}'
          f'{"x seed":>7}{"fold ms":>9}{"x seed":>7}{"branch ms":>10}{"convs ms":>9}'
          f'{"sel %":>6}{"GC ms":>8} |{"seed MB":>9}{"ours MB":>9}{"ratio":>7}')


def row_line(r: dict) -> str:
    ms, mem = r['ms'], r['peak_mb']
    block = ms['fold'] if r['mode'] == 'infer' else ms['ours']
    fold = ms.get('fold')
    mine = mem.get('fold', mem.get('ours'))
    return (f'{r["preset"]:<10}{"x".join(map(str, r["shape"])):<17}{r["mode"]:<8}'
            f'{fmt(ms["seed"], ".1f", 9)}{fmt(ms["ours"], ".1f", 9)}'
            f'{fmt(ms["seed"] / ms["ours"], ".2f", 7)}{fmt(fold, ".1f", 9)}'
            f'{fmt(fold and ms["seed"] / fold, ".2f", 7)}{fmt(ms["branch"], ".1f", 10)}'
            f'{fmt(ms["convs"], ".1f", 9)}{fmt(100 * (1 - ms["branch"] / block), ".0f", 6)}'
            f'{fmt(ms["GC"], ".2f", 8)} |{fmt(mem.get("seed"), ".1f", 9)}{fmt(mine, ".1f", 9)}'
            f'{fmt(mine and mine / mem["seed"], ".2f", 7)}')


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
        return r['peak_mb']['ours'] / r['peak_mb']['seed']

    presets = sorted({r['preset'] for r in rows}, key=list(PRESETS).index)
    return [
        'seed/ours fwd+bwd, paper preset, FPN shapes: ' +
        span([ratio(r, 'seed', 'ours') for r in pick('paper', 'fwd+bwd', True)], 1.5),
        'seed/ours, seed preset, every shape and mode: ' +
        span([ratio(r, 'seed', 'ours') for r in pick('seed')], 1.0),
    ] + [
        f'seed/fold inference, {p} preset: ' +
        span([ratio(r, 'seed', 'fold') for r in pick(p, 'infer')], 2.0) for p in presets
    ] + [
        f'peak memory ours/seed fwd+bwd, {p} preset, FPN shapes: ' +
        span([mem(r) for r in pick(p, 'fwd+bwd', True)], 0.7, higher=False) for p in presets
    ] + [
        'saved activations ours/seed, every row: ' +
        span([mem(r) for r in pick(mode='fwd')], 0.7, higher=False),
        'fuse+select share (sel %), paper preset, every row: ' +
        span([sel(r) for r in pick('paper')], 0.10, higher=False),
    ]


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.quick:
        args.budget, args.repeats = 0.05, 2
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'SKAttention block benchmark on {name}: torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, load average at start '
          f'{os.getloadavg()[0]:.2f} (other processes may share the machine)')
    print(f'times: median of interleaved rounds (at least {args.repeats}, about '
          f'{args.budget:g} s per row); reduction {REDUCTION}, L {L}; presets:')
    for p in args.presets:
        print(f'  {p:<10}{PRESET_NOTES[p]}')
    peak = ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else
            'CPU allocator events\n    from torch.profiler')
    print(LEGEND.format(peak=peak))
    print(HEADER)
    rows, skipped, start = [], [], time.perf_counter()
    per_ref = 0.  # seconds the last combo took per second of its reference fwd+bwd
    for preset in args.presets:
        measured = []  # (conv MACs, reference fwd+bwd ms) of the combos run so far
        for shape in sorted(shapes, key=lambda s: conv_macs(preset, s)):
            macs = conv_macs(preset, shape)
            est = measured[-1][1] * macs / measured[-1][0] if measured else 0.
            if est > args.max_ref_ms:
                why = f'above the {args.max_ref_ms / 1e3:g} s cap'
            elif time.perf_counter() - start + per_ref * est / 1e3 > args.time_limit:
                why = f'running it would end the run after {args.time_limit:g} s'
            else:
                t0 = time.perf_counter()
                combo = run_combo(preset, shape, device, args)
                ref_ms = combo[1]['ms']['seed']
                per_ref = (time.perf_counter() - t0) * 1e3 / ref_ms
                measured.append((macs, ref_ms))
                for r in combo:
                    print(row_line(r), flush=True)
                rows.extend(combo)
                continue
            skipped.append(dict(preset=preset, shape=list(shape), est_ref_ms=est, why=why))
    for s in skipped:
        print(f'skipped {s["preset"]} {"x".join(map(str, s["shape"]))}: reference fwd+bwd '
              f'estimated at {s["est_ref_ms"] / 1e3:.1f} s from the largest measured shape '
              f'scaled by conv multiply-adds; {s["why"]}')
    print(f'{len(rows)} rows in {time.perf_counter() - start:.0f} s; load average at end '
          f'{os.getloadavg()[0]:.2f}')
    print('targets:')
    for line in summary(rows):
        print('  ' + line)
    if args.json:
        meta = dict(device=name, torch=torch.__version__, threads=torch.get_num_threads(),
                    presets={p: PRESETS[p] for p in args.presets}, reduction=REDUCTION, L=L)
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=rows, skipped=skipped), f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
