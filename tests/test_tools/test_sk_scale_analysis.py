"""tools/analysis_tools/sk_scale_analysis.py and the helpers of mmdet_sk.analysis."""
import csv
import json
import subprocess
import sys
from collections import defaultdict

import matplotlib
import pytest
import torch
from mmengine.config import Config

from mmdet_sk.analysis import area_bucket, scale_pipeline, spearman, trend_verdict

matplotlib.use('Agg')
CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
STAGES = ['backbone.layer2', 'backbone.layer3', 'backbone.layer4', 'neck.level1',
          'neck.level2', 'neck.level3', 'neck.level4']


def test_area_bucket_uses_median_box_and_coco_bounds():
    assert area_bucket([]) is None
    assert area_bucket([100.0]) == 'small'
    assert area_bucket([32**2]) == 'medium'  # a bound counts in the upper bucket
    assert area_bucket([96**2 - 1]) == 'medium'
    assert area_bucket([10.0, 2000.0, 20000.0]) == 'medium'  # median, not mean
    assert area_bucket([96**2, 96**2, 10.0]) == 'large'


def test_scale_pipeline():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(192, 160),
                                                     keep_ratio=True),
                dict(type='Pad', size=(640, 640)), dict(type='PackDetInputs')]
    out = scale_pipeline(pipeline, 1.5)
    assert out[1]['scale'] == (288, 240) and out[2]['size'] == (960, 960)
    assert pipeline[1]['scale'] == (192, 160)  # the input is left alone
    assert scale_pipeline([dict(type='mmdet.Resize', scale_factor=0.5)], 2)[0][
        'scale_factor'] == 1.0
    with pytest.raises(ValueError, match='no Resize'):
        scale_pipeline([dict(type='LoadImageFromFile')], 2)


def test_spearman_and_verdict():
    assert spearman([1, 2, 3, 4], [0.1, 0.2, 0.25, 0.9]) == pytest.approx(1)
    assert spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    up = trend_verdict('neck.level1', 'k3d2', 5, [2.0, 0.5, 1.0, 1.5], [0.6, 0.3, 0.4, 0.5])
    assert up['rises'] and up['trend'] == 'rises monotonically'
    assert up['slope'] == pytest.approx(0.2) and up['change'] == pytest.approx(0.3)
    assert up['line'].startswith('neck.level1: large kernel k3d2 (RF 5) weight 0.3000 -> 0.6000')
    down = trend_verdict('s', 'k3d2', 5, [0.5, 1, 2], [0.5, 0.45, 0.4])
    assert not down['rises'] and down['trend'] == 'falls monotonically'
    wobbly = trend_verdict('s', 'k3d2', 5, [0.5, 1, 1.5, 2], [0.4, 0.5, 0.45, 0.6])
    assert wobbly['rises'] and 'not monotonic' in wobbly['trend']
    flat = trend_verdict('s', 'k3d2', 5, [0.5, 1, 2], [0.5, 0.5002, 0.5004])
    assert not flat['rises'] and flat['trend'].startswith('flat')


@pytest.fixture(scope='module')
def tiny_checkpoint(tiny_coco, tmp_path_factory, repo_root):
    """A freshly built (untrained) demo detector saved as an MMEngine-style checkpoint."""
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    cfg = Config.fromfile(f'{repo_root}/{CONFIG}')
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'iter': 0, 'dataset_meta': {'classes': list(cfg.classes)}}}, path)
    return path


def test_tool_writes_csv_json_png(tiny_coco, tiny_checkpoint, tmp_path, repo_root):
    root = str(tiny_coco) + '/'
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/sk_scale_analysis.py', CONFIG,
         str(tiny_checkpoint), '--scales', '0.5', '1.0', '2.0', '--num-images', '4',
         '--out-dir', str(out), '--device', 'cpu', '--cfg-options',
         f'test_dataloader.dataset.data_root={root}'],
        cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    verdict_lines = [ln for ln in proc.stdout.splitlines() if ': large kernel k3d2 (RF 5)' in ln]
    assert [ln.split(':')[0] for ln in verdict_lines] == STAGES

    with open(out / 'sk_scale_weights.csv') as f:
        rows = list(csv.DictReader(f))
    sums = defaultdict(float)
    for r in rows:
        sums[r['bucket'], r['group'], r['scale']] += float(r['weight'])
        assert r['is_large'] == str(int(r['branch'] == 'k3d2'))
    assert {(g, s) for b, g, s in sums if b == 'all'} == {(g, s) for g in STAGES
                                                         for s in ('0.5', '1', '2')}
    assert all(v == pytest.approx(1, abs=2e-6) for v in sums.values())
    all_rows = [r for r in rows if r['bucket'] == 'all']
    assert len(all_rows) == 7 * 3 * 2 and {r['num_images'] for r in all_rows} == {'4'}
    # Buckets partition the images.
    per_bucket = {r['bucket']: int(r['num_images']) for r in rows if r['bucket'] != 'all'}
    assert sum(per_bucket.values()) == 4
    # The rescaling reaches the model: the weights differ between scales.
    w = {(r['group'], r['scale']): float(r['weight']) for r in all_rows if r['branch'] == 'k3d2'}
    assert any(abs(w[g, '0.5'] - w[g, '2']) > 1e-5 for g in STAGES)

    data = json.loads((out / 'sk_scale_weights.json').read_text())
    assert data['num_images'] == 4 and data['scales'] == [0.5, 1.0, 2.0]
    assert list(data['verdicts']['all']) == STAGES
    assert data['groups']['backbone.layer2']['modules'] == [
        'backbone.layer2.0.sk', 'backbone.layer2.1.sk']
    mean = data['weights']['all']['neck.level1']['2']['mean']
    assert mean == pytest.approx([1 - w['neck.level1', '2'], w['neck.level1', '2']], abs=1e-5)

    import matplotlib.image as mpimg
    for name in ('sk_scale_weights.png', 'sk_scale_large_by_bucket.png'):
        img = mpimg.imread(out / name)
        assert img.shape[:2] == (600, 1440)  # 2 x 4 panels of 3.6 x 3.0 inches at 100 dpi
        assert img[..., :3].std() > 0.05  # not a blank canvas
    text = (out / 'sk_scale_verdicts.txt').read_text()
    assert text.startswith('# all images\n') and text.count('large kernel k3d2') >= 7
