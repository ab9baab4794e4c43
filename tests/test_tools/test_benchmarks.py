"""The benchmark tools run end to end (``--quick``) and print their tables."""
import json
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _run(tool, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-W', 'ignore', tool, '--quick', *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_benchmark_sk_quick(tmp_path):
    out = _run('tools/analysis_tools/benchmark_sk.py', '--json', str(tmp_path / 'sk.json'))
    assert 'cpu: torch' in out and '1 threads' in out
    assert 'preset    input BxCxHxW    mode      seed ms  ours ms x seed  fold ms' in out
    for preset in ('seed', 'paper', 'depthwise'):
        for mode in ('fwd', 'fwd+bwd', 'infer'):
            assert any(line.startswith(preset) and f' {mode} ' in line
                       for line in out.splitlines()), (preset, mode)
    assert 'targets:' in out and 'seed/fold inference' in out
    rows = json.loads((tmp_path / 'sk.json').read_text())['rows']
    assert len(rows) == 3 * 2 * 3
    for row in rows:
        assert set(row['ms']) == {'seed', 'ours', 'fold', 'branch', 'convs', 'GC'} - (
            set() if row['mode'] == 'infer' else {'fold'})
        assert all(ms > 0 for ms in row['ms'].values())
        assert all(mb > 0 for mb in row['peak_mb'].values())


def test_benchmark_detector_quick(tmp_path):
    out = _run('tools/analysis_tools/benchmark_detector.py', '--json',
               str(tmp_path / 'det.json'))
    assert 'input (1, 3, 128, 128)' in out
    assert 'params M  /base GFLOPs all  /base GFLOPs b+n' in out
    for name in ('faster-rcnn r50 ', 'faster-rcnn r50 SK', 'faster-rcnn r50 GCNet', 'yolox-s ',
                 'yolox-s SK'):
        assert any(line.startswith(name) for line in out.splitlines()), name
    models = json.loads((tmp_path / 'det.json').read_text())['models']
    by_name = {m['name']: m for m in models}
    # SK adds parameters and FLOPs to its baseline; two-stage models see the same RoI count.
    assert by_name['faster-rcnn r50 SK']['params'] > by_name['faster-rcnn r50']['params']
    assert by_name['yolox-s SK']['flops_bn'] > by_name['yolox-s']['flops_bn']
    assert by_name['faster-rcnn r50 SK']['rois'] == by_name['faster-rcnn r50']['rois'] == 1000
    assert all(m['infer_ms'] > 0 and m['train_ms'] > 0 for m in models)
