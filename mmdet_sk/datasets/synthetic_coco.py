# Copyright (c) mmdet-sk contributors. All rights reserved.
"""A small, deterministic COCO-format detection data set: coloured shapes on textured backgrounds.

Each class is a shape (``CLASSES``); colours are drawn per instance, so only the shape tells the
class. Objects are placed one over another; an object's annotation (bbox, area, polygons) is
computed from its *visible* pixels, and a placement that would leave an earlier object less than
``min_visible`` visible is rejected, so every painted object is annotated. Target areas are drawn
from COCO's small / medium / large ranges with the probabilities ``area_probs``.

The layout is MMDetection's COCO layout::

    out_dir/annotations/instances_{train,val}2017.json
    out_dir/{train,val}2017/000001.jpg ...

Every image has its own random stream ``default_rng([seed, split, index])``, so the same
arguments give byte-identical JSON and train and val never share a stream.
"""
import inspect
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.config import Config

from ..utils.coco import AREA_RANGES

CLASSES = ('rectangle', 'ellipse', 'triangle', 'cross', 'ring')
SPLITS = ('train', 'val')
MARKER = '.complete.json'
_VERSION = 1
_MIN_AREA = 14**2  # smallest target area of a shape, in pixels
_MAX_AREA_FRAC = 0.35  # largest target area, as a fraction of the image


def _circle(r: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


_A = 0.3  # half width of the cross's arms
# class name -> (outline, hole or None), both in the unit square [-1, 1]^2
_SHAPES = {
    'rectangle': (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), None),
    'ellipse': (_circle(1.0), None),
    'triangle': (np.array([[0, -1], [1, 1], [-1, 1]], float), None),
    'cross': (np.array([[-_A, -1], [_A, -1], [_A, -_A], [1, -_A], [1, _A], [_A, _A], [_A, 1],
                        [-_A, 1], [-_A, _A], [-1, _A], [-1, -_A], [-_A, -_A]], float), None),
    'ring': (_circle(1.0), _circle(0.55)),
}


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


_UNIT_AREA = {k: _poly_area(o) - (_poly_area(h) if h is not None else 0.0)
              for k, (o, h) in _SHAPES.items()}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise + a gradient, sometimes stripes and a few thin clutter lines."""
    k = int(rng.integers(2, 7))
    low = rng.uniform(-1, 1, (k, k, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(20, 60)
    img += rng.uniform(40, 215, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    img += ((np.cos(t) * xx + np.sin(t) * yy) / size)[..., None] * rng.uniform(-50, 50, 3)
    if rng.random() < 0.5:
        t, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 32), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (np.cos(t) * xx + np.sin(t) * yy) / period + phase)
        img += wave[..., None] * rng.uniform(-30, 30, 3)
    for _ in range(int(rng.integers(0, 4))):
        p = rng.integers(0, size, 4)
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])),
                 rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)))
    return img.astype(np.float32)


def _shape_mask(rng: np.random.Generator, name: str, area: float, size: int) -> np.ndarray:
    """Rasterise one randomly stretched, rotated and placed shape of about ``area`` pixels."""
    outline, hole = _SHAPES[name]
    aspect = np.exp(rng.uniform(-0.4, 0.4))
    scale = np.sqrt(area / _UNIT_AREA[name]) * np.array([aspect**0.5, aspect**-0.5])
    t = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    polys = [p * scale @ rot.T for p in (outline, hole) if p is not None]
    lo, hi = polys[0].min(0), polys[0].max(0)
    shrink = min(1.0, (size - 2) / float((hi - lo).max()))
    polys, lo, hi = [p * shrink for p in polys], lo * shrink, hi * shrink
    offset = rng.uniform(-lo, size - 1 - hi)
    mask = np.zeros((size, size), np.uint8)
    for value, p in zip((1, 0), polys):
        pts = np.round((p + offset) * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(mask, [pts], value, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _pick_color(rng: np.random.Generator, refs: Sequence[np.ndarray]) -> np.ndarray:
    """The first of 16 random colours at distance >= 100 from all ``refs`` (else the farthest)."""
    cand = rng.uniform(0, 255, (16, 3))
    dist = np.min([np.linalg.norm(cand - r, axis=1) for r in refs], axis=0)
    ok = np.flatnonzero(dist >= 100)
    return cand[ok[0] if len(ok) else int(np.argmax(dist))]


def _area_bins(size: int,
               area_probs: Sequence[float]) -> Tuple[List[Tuple[float, float]], np.ndarray]:
    """The target-area ranges possible at ``size`` and their normalised probabilities."""
    max_area = _MAX_AREA_FRAC * size * size
    bins, probs = [], []
    for (_, lo, hi), p in zip(AREA_RANGES, area_probs):
        lo, hi = max(lo, _MIN_AREA), min(hi, max_area)
        if lo < hi and p > 0:
            bins.append((lo, hi))
            probs.append(p)
    if not bins:
        raise ValueError(f'img_size={size} is too small for any area range')
    return bins, np.asarray(probs, float) / sum(probs)


def _occlude(idmap: np.ndarray, mask: np.ndarray, full: Sequence[int],
             min_visible: float) -> Optional[np.ndarray]:
    """Put a new object (``mask``) on top of ``idmap``; ``None`` if it hides too much of one.

    What an occluded object keeps visible loses its slivers thinner than 3 pixels (morphological
    opening, then one pixel grown back); those pixels become background.
    """
    new = idmap.copy()
    new[mask] = len(full) + 1
    kernel = np.ones((3, 3), np.uint8)
    for k in np.flatnonzero(np.bincount(idmap[mask], minlength=len(full) + 1)[1:]):
        vis = (new == k + 1).astype(np.uint8)
        keep = cv2.dilate(cv2.morphologyEx(vis, cv2.MORPH_OPEN, kernel), kernel) & vis
        if keep.sum() < min_visible * full[k]:
            return None
        new[(vis > 0) & (keep == 0)] = 0
    return new


def _make_image(rng: np.random.Generator, size: int, max_objects: int, min_visible: float,
                area_probs: Sequence[float]) -> Tuple[np.ndarray, list]:
    """Render one image; return it (uint8 BGR) and its objects ``(class, visible mask, full)``."""
    bg = _background(rng, size)
    bins, probs = _area_bins(size, area_probs)
    idmap = np.zeros((size, size), np.int32)  # 0: background, k + 1: object k (topmost)
    classes, full, colors = [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(CLASSES)))
        lo, hi = bins[int(rng.choice(len(bins), p=probs))]
        area = np.exp(rng.uniform(np.log(lo), np.log(hi)))
        for _attempt in range(10):
            mask = _shape_mask(rng, CLASSES[cls], area, size)
            new = _occlude(idmap, mask, full, min_visible) if mask.any() else None
            if new is not None:
                break
        else:
            continue  # no placement keeps the others visible enough: skip this object
        under = [colors[k - 1] for k in np.unique(idmap[mask]) if k > 0]
        idmap = new
        classes.append(cls)
        full.append(int(mask.sum()))
        colors.append(_pick_color(rng, [bg[mask].mean(0)] + under))
    img = bg
    for k, color in enumerate(colors):
        ys, xs = np.nonzero(idmap == k + 1)
        t = rng.uniform(0, 2 * np.pi)  # a soft linear shading across the object
        shade = (np.cos(t) * xs + np.sin(t) * ys) / size * rng.uniform(-60, 60)
        img[ys, xs] = color + shade[:, None]
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    masks = [idmap == k + 1 for k in range(len(classes))]
    return img, [(c, m, f) for c, m, f in zip(classes, masks, full) if m.any()]


def _annotation(mask: np.ndarray) -> dict:
    """bbox ``[x, y, w, h]``, pixel ``area`` and outer polygons of a (visible) mask."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    crop = np.ascontiguousarray(mask[y0:y1 + 1, x0:x1 + 1], dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=(x0, y0))
    segm = []
    for c in contours:
        c = c.reshape(-1, 2)
        if len(c) < 3:  # a fragment 1 pixel thin: its (degenerate) box, so 3 points or more
            (a, b), (e, f) = c.min(0), c.max(0)
            c = np.array([[a, b], [e, b], [e, f], [a, f]])
        segm.append([int(v) for v in c.reshape(-1)])
    return dict(bbox=[x0, y0, x1 - x0 + 1, y1 - y0 + 1], area=int(len(xs)), segmentation=segm)


def generate_coco_shapes(out_dir: Union[str, Path],
                         num_train: int = 800,
                         num_val: int = 200,
                         img_size: int = 256,
                         seed: int = 0,
                         max_objects: int = 6,
                         min_visible: float = 0.5,
                         area_probs: Sequence[float] = (0.3, 0.3, 0.4),
                         jpeg_quality: int = 90) -> dict:
    """Write the synthetic shapes data set in MMDetection's COCO layout.

    Args:
        out_dir (str | Path): Root of the data set (``data_root`` of ``CocoDataset``).
        num_train (int): Number of training images. Defaults to 800.
        num_val (int): Number of validation images. Defaults to 200.
        img_size (int): Side of the square images in pixels. Defaults to 256.
        seed (int): Seed of all random streams. Defaults to 0.
        max_objects (int): Each image tries to place 1 to ``max_objects`` objects. Defaults to 6.
        min_visible (float): Least visible fraction of an object's pixels; placements that would
            hide more of an earlier object are rejected. Defaults to 0.5.
        area_probs (Sequence[float]): Probabilities of a target area in COCO's small, medium and
            large range. Occlusion makes visible areas smaller: the defaults give about 33% small,
            40% medium and 27% large annotations at 256 px. Defaults to (0.3, 0.3, 0.4).
        jpeg_quality (int): JPEG quality of the images. Defaults to 90.

    Returns:
        dict: ``out_dir``, ``classes`` and, per split (``'train'``, ``'val'``), a dict with
        ``ann_file``, ``img_dir``, ``num_images``, ``num_instances`` and ``full_areas`` (the
        unoccluded pixel area of each annotation, in annotation order).
    """
    params = dict(num_train=num_train, num_val=num_val, img_size=img_size, seed=seed,
                  max_objects=max_objects, min_visible=min_visible,
                  area_probs=[float(p) for p in area_probs], jpeg_quality=jpeg_quality)
    root = Path(out_dir)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)]
    result = dict(out_dir=str(root), classes=CLASSES)
    for split_idx, (split, num) in enumerate(zip(SPLITS, (num_train, num_val))):
        img_dir, ann_file = root / f'{split}2017', root / f'annotations/instances_{split}2017.json'
        img_dir.mkdir(exist_ok=True)
        for old in img_dir.glob('*.jpg'):
            old.unlink()
        images, anns, full_areas = [], [], []
        for i in range(num):
            rng = np.random.default_rng([seed, split_idx, i])
            img, objs = _make_image(rng, img_size, max_objects, min_visible, area_probs)
            name = f'{i + 1:06d}.jpg'
            cv2.imwrite(str(img_dir / name), img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            images.append(dict(id=i + 1, file_name=name, width=img_size, height=img_size))
            for cls, mask, full in objs:
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cls + 1,
                                 iscrowd=0, **_annotation(mask)))
                full_areas.append(full)
        coco = dict(info=dict(description='mmdet-sk synthetic shapes', version=str(_VERSION),
                              split=split, **params),
                    licenses=[], images=images, annotations=anns, categories=categories)
        ann_file.write_text(json.dumps(coco, separators=(',', ':')))
        result[split] = dict(ann_file=str(ann_file), img_dir=str(img_dir), num_images=num,
                             num_instances=len(anns), full_areas=full_areas)
    (root / MARKER).write_text(json.dumps(dict(version=_VERSION, params=params), indent=1))
    return result


def ensure_demo_data(out_dir: Union[str, Path], **kwargs) -> str:
    """Generate the data set unless ``out_dir`` already holds a complete one with these arguments.

    Complete means: the marker file written last by :func:`generate_coco_shapes` records the same
    arguments, both annotation files exist and each image folder holds the expected number of
    images. Anything else (missing, partial, other arguments) is regenerated.

    Args:
        out_dir (str | Path): Root of the data set.
        **kwargs: Keyword arguments of :func:`generate_coco_shapes`.

    Returns:
        str: ``out_dir``.
    """
    bound = inspect.signature(generate_coco_shapes).bind(out_dir, **kwargs)
    bound.apply_defaults()
    params = {k: v for k, v in bound.arguments.items() if k != 'out_dir'}
    params['area_probs'] = [float(p) for p in params['area_probs']]
    root = Path(out_dir)
    try:
        marker = json.loads((root / MARKER).read_text())
        complete = marker == json.loads(json.dumps(dict(version=_VERSION, params=params)))
        for split in SPLITS:
            complete = complete and (root / f'annotations/instances_{split}2017.json').is_file()
            num = len(list((root / f'{split}2017').glob('*.jpg')))
            complete = complete and num == params[f'num_{split}']
    except (OSError, ValueError):
        complete = False
    if not complete:
        generate_coco_shapes(root, **kwargs)
    return str(root)


def data_root_options(data_root: Union[str, Path], cfg: Optional[Config] = None) -> List[str]:
    """``--cfg-options`` that point a demo config's data loaders and evaluators at a set.

    Args:
        data_root (str | Path): Root of a set laid out as :func:`generate_coco_shapes` writes it.
        cfg (Config, optional): The config the options are for. A data set that wraps another
            (``MultiImageMixDataset``, as YOLOX's Mosaic needs, ``RepeatDataset``, ...) gets
            the root on the one it wraps. None: no loader's set is wrapped.

    Returns:
        list[str]: ``key=value`` overrides for ``tools/train.py`` / ``tools/test.py``.
    """
    root = str(data_root).rstrip('/') + '/'
    ann = f'{root}annotations/instances_val2017.json'
    options = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        key = f'{loader}.dataset'
        dataset = cfg.get(loader, {}).get('dataset', {}) if cfg is not None else {}
        while 'dataset' in dataset:
            key, dataset = key + '.dataset', dataset['dataset']
        options.append(f'{key}.data_root={root}')
    return options + [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def dataset_stats(ann_file: Union[str, Path]) -> Dict[str, object]:
    """Count images, instances per class and instances per COCO area range of one split.

    Args:
        ann_file (str | Path): A COCO annotation file.

    Returns:
        dict: ``images`` (int), ``instances`` (int), ``per_class`` and ``per_area``
        (dicts of name -> count).
    """
    coco = json.loads(Path(ann_file).read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    per_class = {n: 0 for n in names.values()}
    per_area = {r[0]: 0 for r in AREA_RANGES}
    for ann in coco['annotations']:
        per_class[names[ann['category_id']]] += 1
        per_area[next(r[0] for r in AREA_RANGES if ann['area'] < r[2])] += 1
    return dict(images=len(coco['images']), instances=len(coco['annotations']),
                per_class=per_class, per_area=per_area)
