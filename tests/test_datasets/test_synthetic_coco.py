import json
from pathlib import Path

import pytest

from mmdet_sk.datasets import CLASSES, ensure_demo_data, generate_coco_shapes

TINY = dict(num_train=12, num_val=6, img_size=128, seed=3)


def _load(root, split='train'):
    return json.loads((Path(root) / f'annotations/instances_{split}2017.json').read_text())


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    return root, generate_coco_shapes(root, **TINY)


def test_layout(tiny):
    root, result = tiny
    assert len(CLASSES) >= 4 and len(set(CLASSES)) == len(CLASSES)
    for split, num in (('train', 12), ('val', 6)):
        coco = _load(root, split)
        assert result[split]['num_images'] == num == len(coco['images'])
        assert result[split]['num_instances'] == len(coco['annotations']) > 0
        assert [c['id'] for c in coco['categories']] == list(range(1, len(CLASSES) + 1))
        assert tuple(c['name'] for c in coco['categories']) == CLASSES
        assert sorted(p.name for p in (root / f'{split}2017').glob('*.jpg')) == sorted(
            im['file_name'] for im in coco['images'])
        assert all(im['width'] == im['height'] == 128 for im in coco['images'])
        assert 1 <= max(len([a for a in coco['annotations'] if a['image_id'] == im['id']])
                        for im in coco['images']) <= 6


def test_deterministic(tiny, tmp_path):
    root, _ = tiny
    generate_coco_shapes(tmp_path / 'a', **TINY)
    for split in ('train', 'val'):
        name = f'annotations/instances_{split}2017.json'
        assert (tmp_path / 'a' / name).read_bytes() == (root / name).read_bytes()
        assert (tmp_path / 'a' / f'{split}2017/000004.jpg').read_bytes() == (
            root / f'{split}2017/000004.jpg').read_bytes()
    # train and val draw from different streams; another seed gives other data
    first = [(root / f'{split}2017/000001.jpg').read_bytes() for split in ('train', 'val')]
    assert first[0] != first[1]
    generate_coco_shapes(tmp_path / 'b', **dict(TINY, seed=4))
    assert _load(tmp_path / 'b')['annotations'] != _load(root)['annotations']


def test_annotations_valid(tiny):
    root, result = tiny
    for split in ('train', 'val'):
        coco = _load(root, split)
        images = {im['id']: im for im in coco['images']}
        assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])
        for ann, full in zip(coco['annotations'], result[split]['full_areas']):
            im = images[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= im['width'] and y + h <= im['height']
            assert 0 < ann['area'] <= w * h and ann['area'] <= full
            assert ann['iscrowd'] == 0 and 1 <= ann['category_id'] <= len(CLASSES)
            assert ann['segmentation'] and all(
                len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            xs = [v for p in ann['segmentation'] for v in p[0::2]]
            ys = [v for p in ann['segmentation'] for v in p[1::2]]
            # the polygons run through the centres of the boundary pixels: they span the bbox
            assert (min(xs), min(ys), max(xs), max(ys)) == (x, y, x + w - 1, y + h - 1)


def test_pycocotools_loads(tiny):
    coco_api = pytest.importorskip('pycocotools.coco')
    from pycocotools import mask as mask_utils
    root, _ = tiny
    coco = coco_api.COCO(str(root / 'annotations/instances_train2017.json'))
    assert sorted(coco.getImgIds()) == list(range(1, 13))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for ann in coco.loadAnns(coco.getAnnIds()):
        # outer polygons through boundary pixel centres: holes filled, a half-pixel rim lost
        m = coco.annToMask(ann)
        x, y, w, h = ann['bbox']
        assert m.sum() >= 0.5 * ann['area'] and m[y:y + h, x:x + w].sum() == m.sum()
        x1, y1, w1, h1 = mask_utils.toBbox(mask_utils.encode(m)).tolist()
        assert abs(x1 - x) <= 1 and abs(y1 - y) <= 1 and abs(w1 - w) <= 2 and abs(h1 - h) <= 2


def test_area_ranges_and_occlusion(tmp_path):
    result = generate_coco_shapes(tmp_path, num_train=40, num_val=0, img_size=256, seed=0)
    anns = _load(tmp_path)['annotations']
    areas = [a['area'] for a in anns]
    n = len(areas)
    assert n >= 80
    small = sum(a < 32**2 for a in areas) / n
    large = sum(a >= 96**2 for a in areas) / n
    assert small >= 0.15 and large >= 0.15 and 1 - small - large >= 0.25
    full = result['train']['full_areas']
    assert len(full) == n
    occluded = [a < f for a, f in zip(areas, full)]
    assert sum(occluded) >= 0.1 * n  # overlaps happen ...
    assert all(0.5 * f <= a <= f for a, f in zip(areas, full))  # ... but never hide half of one
    for cls in range(1, len(CLASSES) + 1):
        assert sum(a['category_id'] == cls for a in anns) >= 0.1 * n


def test_ensure_demo_data(tmp_path):
    kwargs = dict(num_train=4, num_val=2, img_size=96, seed=1)
    root = tmp_path / 'demo'
    assert ensure_demo_data(root, **kwargs) == str(root)
    files = sorted(p for p in root.rglob('*') if p.is_file())
    assert len(files) == 4 + 2 + 2 + 1  # images, annotation files, marker
    stamps = {p: p.stat().st_mtime_ns for p in files}
    ensure_demo_data(root, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # left alone
    # incomplete data (a lost image) or other arguments are regenerated
    lost = root / 'train2017/000002.jpg'
    lost.unlink()
    ensure_demo_data(root, **kwargs)
    assert lost.is_file()
    ensure_demo_data(root, **dict(kwargs, num_train=5))
    assert len(list((root / 'train2017').glob('*.jpg'))) == 5


def test_mmdet_coco_dataset(tiny):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    root, _ = tiny
    dataset = CocoDataset(
        data_root=str(root),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=CLASSES),
        pipeline=[])
    assert len(dataset) == 6
    info = dataset.get_data_info(0)
    assert Path(info['img_path']).is_file()
    coco = _load(root, 'val')
    num = sum(a['image_id'] == info['img_id'] for a in coco['annotations'])
    assert len(info['instances']) == num
    assert all(0 <= inst['bbox_label'] < len(CLASSES) for inst in info['instances'])
