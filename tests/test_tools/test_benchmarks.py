"""The benchmark tools run end to end (``--quick``) and print their tables."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

import benchmark_detector
import benchmark_sk

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _run(tool, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-W', 'ignore', tool, '--quick', *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


SKCONV_HEADER = 'slot      input BxCxHxW    s   g  mode      conv ms    SK ms SK/conv no gate ms'


def _check_skconv_rows(rows, nets):
    assert len(rows) == len(nets) * 2 * 3  # (stride 1, 2) x modes
    assert {(r['net'], r['stride'], r['mode']) for r in rows} == {
        (n, s, m) for n in nets for s in (1, 2) for m in ('fwd', 'fwd+bwd', 'infer')}
    for row in rows:
        assert row['groups'] == {'r50': 1, 'x50': 32}[row['net']]
        assert set(row['ms']) == {'conv', 'SK', 'nogate'} | (
            {'fold'} if row['mode'] == 'infer' else set())
        assert all(ms > 0 for ms in row['ms'].values())
        assert set(row['peak_mb']) == {'conv', 'SK'}
        # SKConv keeps more than the conv it replaces (two branches, their norms).
        assert row['peak_mb']['SK'] > row['peak_mb']['conv'] > 0


def test_benchmark_sk_quick(tmp_path):
    out = _run('tools/analysis_tools/benchmark_sk.py', '--json', str(tmp_path / 'sk.json'))
    assert 'cpu: torch' in out and '1 threads' in out
    assert 'preset    input BxCxHxW    mode       ref ms  ours ms  x ref  fold ms' in out
    for preset in ('default', 'paper', 'depthwise'):
        for mode in ('fwd', 'fwd+bwd', 'infer'):
            assert any(line.startswith(preset) and f' {mode} ' in line
                       for line in out.splitlines()), (preset, mode)
    assert 'targets:' in out and 'ref/fold inference' in out
    result = json.loads((tmp_path / 'sk.json').read_text())
    rows = result['rows']
    assert len(rows) == 3 * 2 * 3
    for row in rows:
        assert set(row['ms']) == {'ref', 'ours', 'fold', 'branch', 'convs', 'GC'} - (
            set() if row['mode'] == 'infer' else {'fold'})
        assert all(ms > 0 for ms in row['ms'].values())
        assert all(mb > 0 for mb in row['peak_mb'].values())
    # SKConv against the conv it replaces, ResNet-50 and ResNeXt-50 slots.
    assert SKCONV_HEADER in out
    assert 'SKConv costs:' in out and 'SK/conv, x50' in out and 'SK/no gate' in out
    for net in ('r50 ', 'x50 '):
        assert sum(line.startswith(net) for line in out.splitlines()) == 2 * 3, net
    _check_skconv_rows(result['skconv']['rows'], ('r50', 'x50'))
    assert result['skconv']['skipped'] == []
    # Each SK form against its floor (its branches; ResNeXt-50's stage), with its passes.
    assert 'SK against its floor' in out and 'against the floor:' in out
    assert 'SKAttention fwd+bwd SK/floor' in out and 'SKNet-50 infer SK/floor' in out
    floor = result['floor']
    assert [(r['what'], r['mode']) for r in floor] == [
        (what, mode) for what in ('SKAttention paper', 'SKAttention grouped', 'SKConv x50 tiny',
                                  'SKNet-50 c3 / ResNeXt-50') for mode in ('fwd+bwd', 'infer')]
    for row in floor:
        assert set(row['ms']) == {'floor', 'SK', 'portable'}
        assert all(ms > 0 for ms in row['ms'].values())
        if row['mode'] == 'fwd+bwd':
            mb = row['saved_mb']
            # the fused unit saves what the plain operators save at most, and more than the floor
            assert mb['floor'] <= mb['SK'] <= mb['portable'], row['what']
            if not row['what'].startswith('SKNet'):
                assert set(row['passes']) == {'copy', 'pool', 'select', 'dot', 'grad'}
        if not row['what'].startswith('SKNet'):
            # the cost per call, timed on a small map; the attention network is part of it
            call = row['per_call']
            assert set(call) == {'SK', 'portable'} | (
                {'attention'} if row['mode'] == 'fwd+bwd' else set())
            assert 'attention' not in call or call['attention'] > 0
    lines = out.splitlines()
    for start in ('  passes over a', '  train: 2 branches', '  infer: pool and select'):
        assert sum(line.startswith(start) for line in lines) == 3, start


def test_benchmark_sk_skconv_only(tmp_path):
    out = _run('tools/analysis_tools/benchmark_sk.py', '--skconv-only', '--nets', 'x50',
               '--json', str(tmp_path / 'sk.json'))
    assert 'targets:' not in out and 'ref ms' not in out and SKCONV_HEADER in out
    assert 'against its floor' not in out
    result = json.loads((tmp_path / 'sk.json').read_text())
    assert result['rows'] == [] and result['meta']['nets'] == {'x50': [32, [256, 512, 1024]]}
    _check_skconv_rows(result['skconv']['rows'], ('x50', ))


def test_skconv_slots_are_resnet_conv2_shapes():
    slots = {(s['net'], s['stage'], s['stride'], s['shape'][0]): s['shape']
             for s in benchmark_sk.skconv_slots()}
    assert len(slots) == 2 * 3 * 2 * 2
    # ResNet-50 on 800x1344: c2 200x336 feeds c3's first conv2 (stride 2), c3 is 100x168.
    assert slots['r50', 'c3', 2, 1] == [1, 128, 200, 336]
    assert slots['r50', 'c3', 1, 2] == [2, 128, 100, 168]
    assert slots['r50', 'c5', 2, 1] == [1, 512, 50, 84]
    assert slots['x50', 'c4', 1, 1] == [1, 512, 50, 84]
    assert slots['x50', 'c5', 1, 2] == [2, 1024, 25, 42]


@pytest.mark.parametrize('gate, bias', [(True, False), (False, False), (False, True)])
def test_fold_skconv_matches_the_unit(gate, bias):
    import torch

    from mmdet_sk.models.layers import SKConv
    from mmdet_sk.utils.benchmark import trained_like_norms
    torch.manual_seed(0)
    unit = SKConv(64, 64, 3, 2, 1, groups=32, bias=bias, gate=gate, fuse_cfg=dict())
    trained_like_norms(unit)
    if gate:
        torch.nn.init.uniform_(unit.gate, 0.2, 0.8)
    unit.eval()
    x = torch.randn(2, 64, 9, 11)
    with torch.no_grad():
        ref = unit(x)
        fold = benchmark_sk.fold_skconv(unit)
        out = fold(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    kept = [isinstance(n, torch.nn.BatchNorm2d) for n in fold.norms]
    assert kept == [gate, False]  # the gated unit keeps branch 0's norm


def test_benchmark_detector_quick(tmp_path):
    out = _run('tools/analysis_tools/benchmark_detector.py', '--json',
               str(tmp_path / 'det.json'))
    assert 'input (1, 3, 128, 128)' in out
    assert 'params M  /base GFLOPs all  /base GFLOPs b+n' in out
    assert '(demo configs: (1, 3, 192, 192))' in out
    names = ('faster-rcnn r50 ', 'faster-rcnn r50 SK ', 'faster-rcnn r50 SKConv',
             'faster-rcnn r50 GCNet', 'faster-rcnn x50 ', 'faster-rcnn x50 SKConv',
             'faster-rcnn x50 SKNet', 'yolox-s ', 'yolox-s SK', 'rtmdet-tiny ', 'rtmdet-tiny SK',
             'rtmdet-s ', 'rtmdet-s SK', 'demo r18 ', 'demo r18 SK ', 'demo r18 SKConv')
    for name in names:
        assert any(line.startswith(name) for line in out.splitlines()), name
    models = json.loads((tmp_path / 'det.json').read_text())['models']
    assert len(models) == len(names)
    by_name = {m['name']: m for m in models}
    # SK adds parameters and FLOPs to its baseline; two-stage models see the same RoI count.
    for sk, base in (('faster-rcnn r50 SK', 'faster-rcnn r50'),
                     ('faster-rcnn r50 SKConv', 'faster-rcnn r50'),
                     ('faster-rcnn x50 SKConv', 'faster-rcnn x50'),
                     ('faster-rcnn x50 SKNet', 'faster-rcnn x50'), ('yolox-s SK', 'yolox-s'),
                     ('rtmdet-tiny SK', 'rtmdet-tiny'), ('rtmdet-s SK', 'rtmdet-s'),
                     ('demo r18 SK', 'demo r18'), ('demo r18 SKConv', 'demo r18')):
        assert by_name[sk]['baseline'] == base
        assert by_name[sk]['input'] == by_name[base]['input']
        assert by_name[sk]['params'] > by_name[base]['params'], sk
        assert by_name[sk]['flops_bn'] > by_name[base]['flops_bn'], sk
        assert by_name[sk]['rois'] == by_name[base]['rois'], sk
    assert by_name['faster-rcnn r50 SK']['rois'] == by_name['faster-rcnn x50']['rois'] == 1000
    assert by_name['demo r18']['input'] == [192, 192] and by_name['demo r18']['rois'] == 100
    assert by_name['faster-rcnn r50']['input'] == [128, 128]
    assert all(m['infer_ms'] > 0 and m['train_ms'] > 0 for m in models)


def test_benchmark_detector_times_the_portable_sk_beside_the_fused(tmp_path):
    out = _run('tools/analysis_tools/benchmark_detector.py', '--models', 'demo r18 SK',
               '--portable', '--json', str(tmp_path / 'det.json'))
    rows = [line for line in out.splitlines() if line.startswith('demo r18')]
    assert [row.split('192x192')[0].strip() for row in rows] == [
        'demo r18', 'demo r18 SK', 'demo r18 SK portable']
    by_name = {m['name']: m for m in json.loads((tmp_path / 'det.json').read_text())['models']}
    portable, fused = by_name['demo r18 SK portable'], by_name['demo r18 SK']
    assert portable['baseline'] == 'demo r18'
    assert portable['params'] == fused['params'] and portable['flops'] == fused['flops']
    assert portable['train_ms'] > 0 and portable['infer_ms'] > 0


def test_benchmark_detector_selects_models_with_their_baselines():
    names = [m[0] for m in benchmark_detector.selected(['faster-rcnn x50 SKConv', 'demo r18'])]
    assert names == ['faster-rcnn x50', 'faster-rcnn x50 SKConv', 'demo r18']
    # every baseline is a model of the table, listed before the models measured against it
    order = [m[0] for m in benchmark_detector.MODELS]
    for name, _, base, _ in benchmark_detector.MODELS:
        assert base is None or order.index(base) < order.index(name), name
