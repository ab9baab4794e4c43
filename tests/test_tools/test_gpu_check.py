"""``tools/misc/gpu_check.py``: its helpers, and its run on a machine without CUDA."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'misc', 'gpu_check.py')


@pytest.fixture(scope='module')
def gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason='the script runs its checks on CUDA')
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, '--work-dir', str(tmp_path / 'w')],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'No CUDA device is available' in proc.stdout
    assert not (tmp_path / 'w').exists()


def test_unknown_skip_is_refused_by_the_command_line():
    proc = subprocess.run([sys.executable, SCRIPT, '--skip', 'nope'], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


def test_select_checks(gpu_check):
    names = list(gpu_check.CHECKS)
    assert names == ['amp_demo', 'amp_r50', 'identity', 'bench', 'syncbn']
    assert gpu_check.select_checks([]) == names
    assert gpu_check.select_checks(['bench', 'amp_demo']) == [
        'amp_r50', 'identity', 'syncbn']
    with pytest.raises(ValueError, match='unknown checks'):
        gpu_check.select_checks(['bench', 'nope'])


def test_run_check_guards_failures(gpu_check, capsys):
    ok = gpu_check.run_check('a', lambda x: f'got {x}', 3)
    assert ok.name == 'a' and ok.ok and ok.detail == 'got 3' and ok.seconds >= 0

    def boom(_):
        raise ValueError('bad value\nmore lines')

    failed = gpu_check.run_check('b', boom, 3)
    assert not failed.ok and failed.detail == 'ValueError: bad value'
    assert 'Traceback' in capsys.readouterr().err


def test_format_table(gpu_check):
    results = [gpu_check.CheckResult('amp_demo', True, 'loss 1.0 -> 0.9', 12.34),
               gpu_check.CheckResult('bench', False, 'a | b\n  c', 0.05)]
    assert gpu_check.format_table(results).splitlines() == [
        '| check | result | detail (time) |',
        '| --- | --- | --- |',
        '| amp_demo | pass | loss 1.0 -> 0.9 (12.3 s) |',
        '| bench | FAIL | a \\| b c (0.1 s) |',
    ]


def test_nonfinite_losses(gpu_check):
    records = [dict(iter=1, loss=1.5, loss_cls=0.5, lr=float('nan')),
               dict(iter=2, loss=float('nan'), loss_bbox=float('inf'), acc=99.0)]
    assert gpu_check.nonfinite_losses(records) == ['iter 2: loss=nan', 'iter 2: loss_bbox=inf']
    assert gpu_check.nonfinite_losses(records[:1]) == []


def test_main_exits_1_when_a_check_fails(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, 'get_device_name', lambda *a: 'fake GPU')

    def fail(work_dir):
        raise RuntimeError('broken')

    monkeypatch.setattr(gpu_check, 'CHECKS', dict(good=lambda work_dir: 'fine', bad=fail))
    assert gpu_check.main(['--work-dir', str(tmp_path)]) == 1
    table = capsys.readouterr().out.split('\n\n')[-1].splitlines()
    assert table[2].startswith('| good | pass | fine (')
    assert table[3].startswith('| bad | FAIL | RuntimeError: broken (')
    assert gpu_check.main(['--work-dir', str(tmp_path), '--skip', 'bad']) == 0


def test_bench_line_and_speedup(gpu_check):
    row = dict(preset='paper', shape=[8, 256, 100, 167], compiled=True,
               memory_format='channels_last', mode='infer',
               ms=dict(ref=3.0, ours=2.0, fold=1.5))
    assert gpu_check.speedup(row) == 2.0
    assert gpu_check.speedup(dict(row, mode='fwd+bwd')) == 1.5
    assert gpu_check.bench_line(row) == (
        'bench paper   8x256x100x167 channels_last compiled infer    '
        'ref 3.00 ms ours 2.00 ms fold 1.50 ms  x ref 2.00')


def test_bench_case_times_the_block_variants_on_cpu(gpu_check):
    times = gpu_check.bench_case('paper', (1, 64, 8, 8), channels_last=False, compiled=False,
                                 device=torch.device('cpu'), budget=0., repeats=1)
    assert set(times) == {'fwd+bwd', 'infer'}
    assert set(times['fwd+bwd']) == {'ref', 'ours'} and set(times['infer']) == {
        'ref', 'ours', 'fold'}
    assert all(ms > 0 for per_mode in times.values() for ms in per_mode.values())
