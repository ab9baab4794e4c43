#!/usr/bin/env python
"""Check mmdet-sk on a CUDA GPU in about 5 minutes and print one Markdown table.

    python tools/misc/gpu_check.py                       # every check
    python tools/misc/gpu_check.py --skip bench syncbn   # leave some out

Checks (each guarded: a failure is reported and the others still run):

* ``amp_demo``, ``amp_r50``: ``tools/train.py --amp`` (MMEngine's ``AmpOptimWrapper``: fp16
  autocast, dynamic loss scaling) for a few iterations of the SK demo config and of
  ``configs/faster_rcnn_r50_sk_fpn.py`` (256 px, no ImageNet weights) on a small generated
  shapes set; every logged loss must be finite.
* ``identity``: a gated ``SKAttention`` returns its input exactly (train, eval, fp16
  autocast), and the SK ResNet-50 of the R-50 config loaded with a plain ResNet-50's
  trained-like weights computes exactly what the plain one computes.
* ``bench``: the block variants that ``tools/analysis_tools/benchmark_sk.py`` times
  (:mod:`mmdet_sk.utils.block_benchmark`), ours against the reference module: fwd+bwd and inference,
  NCHW and channels_last, eager and ``torch.compile``.
* ``syncbn``: the R-50 SK config with ``norm_cfg=dict(type='SyncBN')`` (backbone and SK
  blocks) in a one-process ``torchrun`` (NCCL): one forward/backward under DDP.

Logs and outputs go to ``--work-dir``. Exit code 1 if a check failed; without a CUDA device
the script says so and exits 0.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

DEMO = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
R50 = 'configs/faster_rcnn_r50_sk_fpn.py'
CLASSES = '(rectangle,ellipse,triangle,cross,ring)'  # mmdet_sk.datasets.CLASSES
RESULT = 'GPU_CHECK_RESULT '  # the syncbn worker's result line
# Small batches, no worker processes, a log line (and finite-loss check) every iteration.
FAST_OPTIONS = [
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
    'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1',
    'model.backbone.init_cfg=None'
]
DEMO_OPTIONS = ['train_cfg.max_iters=4', 'train_cfg.val_interval=4']
# The COCO 1x config: one epoch of the 8 training images (4 iterations), at 256 px, 5 classes.
R50_OPTIONS = [
    'train_cfg.max_epochs=1', 'train_dataloader.dataset.pipeline.2.scale=(256,256)',
    'val_dataloader.dataset.pipeline.1.scale=(256,256)',
    f'train_dataloader.dataset.metainfo.classes={CLASSES}',
    f'val_dataloader.dataset.metainfo.classes={CLASSES}', 'model.roi_head.bbox_head.num_classes=5'
]
# (preset, input, compiled too) of the block benchmark: P3 of a 1333x800 image, batch 8.
BENCH_CASES = [('paper', (8, 256, 100, 167), True), ('default', (8, 256, 100, 167), False)]


class CheckResult(NamedTuple):
    name: str
    ok: bool
    detail: str
    seconds: float


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/gpu_check', help='logs and outputs')
    parser.add_argument('--skip', nargs='+', default=[], choices=list(CHECKS), metavar='CHECK',
                        help=f'checks to leave out, of: {" ".join(CHECKS)}')
    parser.add_argument('--syncbn-worker', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def select_checks(skip: Sequence[str]) -> List[str]:
    """The names of the checks to run, in order, without those in ``skip``.

    Raises:
        ValueError: ``skip`` names a check that does not exist.
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f'unknown checks {unknown}; the checks are {list(CHECKS)}')
    return [name for name in CHECKS if name not in skip]


def run_check(name: str, fn: Callable[..., str], *args) -> CheckResult:
    """Run one check; an exception fails it (traceback on stderr) instead of stopping the rest.

    Args:
        name (str): The check's name.
        fn (Callable): The check; returns its detail line, raises if it fails.
        *args: Arguments of ``fn``.

    Returns:
        CheckResult: The name, whether it passed, the detail (the error if it failed) and the
        seconds it took.
    """
    start = time.perf_counter()
    try:
        ok, detail = True, fn(*args)
    except Exception as e:  # noqa: BLE001  (any failure is a result of the check)
        traceback.print_exc()
        message = str(e).strip().splitlines()
        ok, detail = False, f'{type(e).__name__}: {message[0] if message else ""}'
    return CheckResult(name, ok, detail, time.perf_counter() - start)


def format_table(results: Sequence[CheckResult]) -> str:
    """The results as a Markdown table: check | result | detail (time)."""
    lines = ['| check | result | detail (time) |', '| --- | --- | --- |']
    for r in results:
        detail = ' '.join(r.detail.split()).replace('|', '\\|')
        lines.append(f'| {r.name} | {"pass" if r.ok else "FAIL"} | {detail} '
                     f'({r.seconds:.1f} s) |')
    return '\n'.join(lines)


def nonfinite_losses(records: Sequence[dict]) -> List[str]:
    """``'iter N: key=value'`` for every logged loss (a ``loss*`` key) that is not finite."""
    return [f'iter {r.get("iter", "?")}: {k}={v}' for r in records for k, v in r.items()
            if k.startswith('loss') and not math.isfinite(v)]


def _run(cmd: List[str], log_file: str, timeout: float = 300) -> str:
    """Run ``cmd`` in the repository; write its output to ``log_file``, raise if it failed."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    with open(log_file, 'w') as f:
        f.write(out)
    if proc.returncode:
        last = [line for line in out.splitlines() if line.strip()][-1:] or ['']
        raise RuntimeError(f'exit {proc.returncode}: {last[0].strip()} (log: {log_file})')
    return out


def train_check(config: str, options: List[str], work_dir: str) -> str:
    """``tools/train.py CONFIG --amp`` on the generated set; the losses must be finite."""
    from mmengine.config import Config

    from mmdet_sk.datasets import data_root_options, ensure_demo_data
    data = ensure_demo_data(osp.join(osp.dirname(work_dir), 'data'), num_train=8, num_val=4,
                            img_size=160, seed=0)
    os.makedirs(work_dir, exist_ok=True)
    _run([sys.executable, 'tools/train.py', config, '--amp', '--work-dir', work_dir,
          '--cfg-options', *data_root_options(data), *FAST_OPTIONS, *options],
         osp.join(work_dir, 'train.log'))
    dumped = Config.fromfile(osp.join(work_dir, osp.basename(config)))
    wrapper = dumped.optim_wrapper.type
    if wrapper != 'AmpOptimWrapper':
        raise RuntimeError(f'--amp trained with optim_wrapper.type={wrapper!r}')
    scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))[-1]
    with open(scalars) as f:
        records = [r for r in map(json.loads, f) if 'loss' in r]
    if not records:
        raise RuntimeError(f'no losses logged in {scalars}')
    bad = nonfinite_losses(records)
    if bad:
        raise FloatingPointError(f'{len(bad)} losses not finite under fp16 AMP: {bad[:3]}')
    return (f'{wrapper}, {len(records)} iterations, loss {records[0]["loss"]:.3f} -> '
            f'{records[-1]["loss"]:.3f}, all finite')


def check_amp_demo(work_dir: str) -> str:
    """fp16 AMP training of the SK demo config (ResNet-18, 192 px), 4 iterations."""
    return train_check(DEMO, DEMO_OPTIONS, osp.join(work_dir, 'amp_demo'))


def check_amp_r50(work_dir: str) -> str:
    """fp16 AMP training of the R-50 SK COCO config at 256 px, 4 iterations."""
    return train_check(R50, R50_OPTIONS, osp.join(work_dir, 'amp_r50'))


def _register() -> None:
    """Register mmdet's and mmdet-sk's modules; keep MMEngine's info messages quiet."""
    import mmdet_sk  # noqa: F401  (registers the SK modules)
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger
    MMLogger.get_instance('gpu_check', log_level='WARNING')  # the current logger from now on
    register_all_modules(init_default_scope=True)


def r50_config(sync_bn: bool = False) -> dict:
    """The model config of the R-50 SK config, without ImageNet weights, SyncBN if asked."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, R50))
    cfg.model.backbone.init_cfg = None
    if sync_bn:
        cfg.model.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
        for sk in (cfg.model.backbone.plugins[0].cfg, cfg.model.neck.plugin):
            sk.norm_cfg = dict(type='SyncBN')
    return cfg.model


def check_identity(work_dir: str, device: str = 'cuda',
                   amp_dtype: torch.dtype = torch.float16) -> str:
    """SK inserted with ``gate=True`` is the identity, bit for bit, on ``device``."""
    from mmdet.registry import MODELS

    from mmdet_sk.models.layers import SKAttention
    from mmdet_sk.utils.benchmark import trained_like_norms
    _register()
    torch.manual_seed(0)
    block = SKAttention(256, kernels=(3, 3), dilations=(1, 2), groups=32, gate=True).to(device)
    x = torch.randn(2, 256, 32, 32, device=device)
    for mode, autocast in (('train', False), ('eval', False), ('train', True)):
        block.train(mode == 'train')
        with torch.no_grad(), torch.autocast(device, dtype=amp_dtype, enabled=autocast):
            out = block(x)
        if not torch.equal(out, x):
            raise AssertionError(f'gated SKAttention ({mode}, autocast={autocast}) is not the '
                                 f'identity: max |diff| {(out - x).abs().max().item():.3g}')

    sk_cfg = r50_config().backbone
    plain_cfg = dict(sk_cfg, type='ResNet', plugins=None)
    plain = MODELS.build(plain_cfg).to(device)
    plain.init_weights()
    trained_like_norms(plain)
    sk = MODELS.build(sk_cfg).to(device)
    sk.init_weights()
    result = sk.load_state_dict(plain.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise AssertionError(f'plain weights do not load whole: {result}')
    blocks = sum(isinstance(m, SKAttention) for m in sk.modules())
    x = torch.randn(2, 3, 224, 224, device=device)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for mode in ('eval', 'train'):
            outs = []
            for model in (plain, sk):
                model.train(mode == 'train')  # mmdet's ResNet.train returns None
                with torch.no_grad():
                    outs.append(model(x))
            if not all(torch.equal(a, b) for a, b in zip(*outs)):
                diff = max((a - b).abs().max().item() for a, b in zip(*outs))
                raise AssertionError(f'SK ResNet-50 ({mode}) differs from the plain one: '
                                     f'max |diff| {diff:.3g}')
    return (f'gated SKAttention == input (train, eval, {str(amp_dtype)[6:]} autocast); '
            f'ResNet-50 + {blocks} SK blocks == ResNet-50 (eval, train), bit for bit')


def bench_case(preset: str, shape: tuple, channels_last: bool, compiled: bool,
               device: torch.device, budget: float = 0.2, repeats: int = 5) -> Dict[str, dict]:
    """Median ms of the reference module, ours and (inference) fold: ``{mode: {variant: ms}}``."""
    from mmdet_sk.utils.benchmark import measure
    from mmdet_sk.utils.block_benchmark import (block_calls, build_block_variants,
                                                check_block_outputs)
    models = build_block_variants(preset, shape[1], device)
    gen = torch.Generator().manual_seed(1)
    x, grad = (torch.randn(shape, generator=gen).to(device) for _ in range(2))
    check_block_outputs(models, x)  # eager NCHW: ours and fold compute the reference block
    if channels_last:
        fmt = torch.channels_last
        models = {k: m.to(memory_format=fmt) for k, m in models.items()}
        x, grad = x.contiguous(memory_format=fmt), grad.contiguous(memory_format=fmt)
    if compiled:
        torch._dynamo.reset()
        models = {k: torch.compile(m) for k, m in models.items()}
    times = {}
    for mode in ('fwd+bwd', 'infer'):
        fns = block_calls(models, mode, x.requires_grad_(mode != 'infer'), grad)
        fns = {k: fns[k] for k in ('ref', 'ours', 'fold') if k in fns}
        for fn in list(fns.values()) * 3:  # compilation, cuDNN's first calls
            fn()
        if mode == 'infer':
            torch.testing.assert_close(fns['fold'](), fns['ref'](), rtol=1e-2, atol=1e-2)
        times[mode] = measure(fns, device, budget, repeats)[0]
    return times


def speedup(row: dict) -> float:
    """The reference's time over ours (fwd+bwd) or fold's (infer) in one benchmark row."""
    return row['ms']['ref'] / row['ms']['fold' if row['mode'] == 'infer' else 'ours']


def bench_line(row: dict) -> str:
    """One benchmark row as a line of text."""
    return (f'bench {row["preset"]:<7} {"x".join(map(str, row["shape"]))} '
            f'{row["memory_format"]:<14}{"compiled" if row["compiled"] else "eager":<9}'
            f'{row["mode"]:<8} ' + ' '.join(f'{k} {v:.2f} ms' for k, v in row['ms'].items()) +
            f'  x ref {speedup(row):.2f}')


def check_bench(work_dir: str, device: str = 'cuda', cases: Sequence[tuple] = BENCH_CASES,
                budget: float = 0.2) -> str:
    """The block benchmark on ``device``: rows printed and written to ``bench.json``."""
    rows = []
    for preset, shape, with_compile in cases:
        for compiled in (False, True) if with_compile else (False, ):
            for channels_last in (False, True):
                times = bench_case(preset, shape, channels_last, compiled,
                                   torch.device(device), budget)
                fmt = 'channels_last' if channels_last else 'NCHW'
                for mode, ms in times.items():
                    rows.append(dict(preset=preset, shape=list(shape), compiled=compiled,
                                     memory_format=fmt, mode=mode, ms=ms))
                    print(bench_line(rows[-1]), flush=True)
    with open(osp.join(work_dir, 'bench.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    span = {}
    for mode in ('fwd+bwd', 'infer'):
        values = [speedup(r) for r in rows if r['mode'] == mode]
        span[mode] = f'{min(values):.2f}..{max(values):.2f}'
    return (f'{len(rows)} rows (bench.json), outputs match the reference; x ref: fwd+bwd (ours) '
            f'{span["fwd+bwd"]}, infer (fold) {span["infer"]}')


def check_syncbn(work_dir: str) -> str:
    """The ``syncbn`` worker in ``torchrun --standalone --nproc_per_node=1``."""
    out = _run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                '--nproc_per_node=1', osp.abspath(__file__), '--syncbn-worker'],
               osp.join(work_dir, 'syncbn.log'))
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f'the worker printed no result (log: {work_dir}/syncbn.log)')
    return lines[-1][len(RESULT):]


def syncbn_worker() -> None:
    """Build the R-50 SK detector with SyncBN under NCCL; one forward/backward under DDP."""
    import torch.distributed as dist
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from torch.nn.parallel import DistributedDataParallel
    _register()
    dist.init_process_group('nccl')
    rank = int(os.environ['LOCAL_RANK'])
    torch.cuda.set_device(rank)
    model = MODELS.build(r50_config(sync_bn=True))
    model.init_weights()
    model = model.cuda().train()
    sync = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    training = [m for m in sync if m.training]
    if not training:
        raise RuntimeError('no SyncBatchNorm in training mode')
    ddp = DistributedDataParallel(model, device_ids=[rank])
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 256, 256]] * 2, num_items=[3, 2], num_classes=80)
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(ddp(**data, mode='loss'))
    loss.backward()
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f'loss {loss.item()}')
    no_grad = [m for m in training if m.weight.grad is None]
    if no_grad:
        raise RuntimeError(f'{len(no_grad)} training SyncBatchNorms got no gradient')
    print(f'{RESULT}nccl, world size {dist.get_world_size()}: {len(sync)} SyncBatchNorm '
          f'({len(training)} training: the SK norms), loss {loss.item():.3f}, gradients reach '
          f'them', flush=True)
    dist.destroy_process_group()


CHECKS: Dict[str, Callable[[str], str]] = dict(
    amp_demo=check_amp_demo, amp_r50=check_amp_r50, identity=check_identity,
    bench=check_bench, syncbn=check_syncbn)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.syncbn_worker:
        syncbn_worker()
        return 0
    if not torch.cuda.is_available():
        print('No CUDA device is available: nothing to check (tools/misc/gpu_check.py needs '
              'a CUDA GPU).')
        return 0
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    print(f'gpu_check on {torch.cuda.get_device_name()}: torch {torch.__version__}, CUDA '
          f'{torch.version.cuda}; logs in {work_dir}', flush=True)
    results = []
    for name in select_checks(args.skip):
        print(f'== {name}', flush=True)
        results.append(run_check(name, CHECKS[name], work_dir))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
