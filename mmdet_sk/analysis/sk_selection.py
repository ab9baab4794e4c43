# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Read the selection weights of a model's SK modules: the "what did SK choose" tools.

The SK modules are the :class:`SKAttention` blocks (plugins) and the :class:`SKConv` units
(in a conv slot); both record their selection weights (K, B, C) while ``record_selection`` is
on. This module finds and groups them and collects their weights, for
:class:`mmdet_sk.engine.SKSelectionHook` (during training) and
``tools/analysis_tools/sk_scale_analysis.py`` (on a checkpoint, at several input scales); the
statistics of a scale analysis are in :mod:`~mmdet_sk.analysis.scale_stats`, its files in
:mod:`~mmdet_sk.analysis.scale_report`.

SK modules are grouped per backbone stage and per neck level, and a group's weight is the plain
average over its modules (every module counts once, whatever its channel count):

* a module inside a :class:`LevelPlugins` acts on one neck level:
  ``neck.level_plugins.plugins.2`` (or ``neck.1.plugins.2`` in a neck list) of a
  ``LevelPlugins(levels=(1, 2, 3, 4))`` is group ``neck.level3`` (level = index of the neck's
  output map);
* any other module is grouped by its name up to the first numeric component: the ResNet plugin
  ``backbone.layer2.0.sk`` and the SKConv ``backbone.layer2.0.conv2`` are group
  ``backbone.layer2``, the CSPDarknet plugin ``backbone.stage3.2`` is group
  ``backbone.stage3``.

Branches are labelled ``k{kernel}d{dilation}`` (``k3d2``: 3x3 conv, dilation 2); the "large"
branch is the one with the largest effective receptive field ``(k - 1) * d + 1``.
"""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from ..models.layers import SKAttention, SKConv
from ..models.necks import LevelPlugins
from ..utils.coco import AREA_BUCKETS, AREA_RANGES

BUCKETS = AREA_BUCKETS  # ('small', 'medium', 'large')
#: The module types that :func:`sk_groups` finds.
SK_MODULES = (SKAttention, SKConv)
SKModule = Union[SKAttention, SKConv]


class SKGroup:
    """The SK modules of one backbone stage or neck level, with their common branch layout.

    Args:
        name (str): Readable group name, e.g. ``'backbone.layer2'`` or ``'neck.level1'``.
        kernels (tuple[int]): Kernel size of each branch.
        dilations (tuple[int]): Dilation of each branch.
    """

    def __init__(self, name: str, kernels: Tuple[int, ...], dilations: Tuple[int, ...]) -> None:
        self.name = name
        self.kernels = tuple(kernels)
        self.dilations = tuple(dilations)
        self.modules: List[SKModule] = []
        self.module_names: List[str] = []

    @property
    def erfs(self) -> List[int]:
        """Effective receptive field ``(k - 1) * d + 1`` of each branch."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernels, self.dilations)]

    @property
    def labels(self) -> List[str]:
        """``k{k}d{d}`` per branch; prefixed with ``b{i}_`` when two branches are alike."""
        labels = [f'k{k}d{d}' for k, d in zip(self.kernels, self.dilations)]
        if len(set(labels)) < len(labels):
            labels = [f'b{i}_{label}' for i, label in enumerate(labels)]
        return labels

    @property
    def large_index(self) -> int:
        """Index of the branch with the largest effective receptive field (first if tied)."""
        return int(np.argmax(self.erfs))

    def image_weights(self) -> Optional[Tensor]:
        """Per-image mean branch weights of the last recorded forward.

        Returns:
            Tensor | None: Shape (B, K): each module's ``last_selection`` (K, B, C) averaged
            over channels, then over the group's modules. Rows sum to 1. None when no module
            of the group has recorded anything.
        """
        sel = [m.last_selection for m in self.modules if m.last_selection is not None]
        if not sel:
            return None
        return torch.stack([s.float().mean(2).t() for s in sel]).mean(0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the model inside a wrapper (DDP, FSDP, ...), or the model itself."""
    return model.module if is_model_wrapper(model) else model


def _group_name(name: str, modules: Dict[str, nn.Module]) -> str:
    """Readable group name of the SK module called ``name`` (see the module docstring)."""
    parts = name.split('.')
    if len(parts) >= 3 and parts[-2] == 'plugins' and parts[-1].isdigit():
        parent_name = '.'.join(parts[:-2])
        parent = modules.get(parent_name)
        if isinstance(parent, LevelPlugins):
            level = parent.levels[int(parts[-1])]
            prefix = parts[:-2]
            # neck.level_plugins (PluginNeck) or neck.1 (a neck list) -> neck
            while len(prefix) > 1 and (prefix[-1].isdigit() or prefix[-1] == 'level_plugins'):
                prefix = prefix[:-1]
            return '.'.join(prefix + [f'level{level}'])
    for i, part in enumerate(parts):
        if part.isdigit() and i > 0:
            return '.'.join(parts[:i])
    return name


def sk_groups(model: nn.Module) -> 'OrderedDict[str, SKGroup]':
    """Find the SK modules (SKAttention, SKConv) of ``model``; group them per stage / level.

    Args:
        model (nn.Module): A model, possibly inside a wrapper (DDP).

    Returns:
        OrderedDict[str, SKGroup]: Groups in module order. Modules of one stage with a
        different branch layout (kernels, dilations) get their own group, named
        ``'{stage}[k3d1,k5d1]'``.
    """
    model = unwrap_model(model)
    named = dict(model.named_modules())
    groups: 'OrderedDict[str, SKGroup]' = OrderedDict()
    for name, module in named.items():
        if not isinstance(module, SK_MODULES):
            continue
        key = _group_name(name, named)
        group = groups.get(key)
        if group is not None and (group.kernels, group.dilations) != (module.kernels,
                                                                      module.dilations):
            probe = SKGroup(key, module.kernels, module.dilations)
            key = f'{key}[{",".join(probe.labels)}]'
            group = groups.get(key)
        if group is None:
            group = groups[key] = SKGroup(key, module.kernels, module.dilations)
        group.modules.append(module)
        group.module_names.append(name)
    return groups


def set_recording(groups: Dict[str, SKGroup], enabled: bool) -> None:
    """Switch ``record_selection`` of every module on or off and drop stored weights."""
    for group in groups.values():
        for module in group.modules:
            module.record_selection = enabled
            module.last_selection = None


@contextmanager
def recording(groups: Dict[str, SKGroup]) -> Iterator[Dict[str, SKGroup]]:
    """Record the selection weights inside the ``with`` block; switch off and clean up after."""
    set_recording(groups, True)
    try:
        yield groups
    finally:
        set_recording(groups, False)


def image_selection(groups: Dict[str, SKGroup]) -> Dict[str, np.ndarray]:
    """Per-image mean branch weights of every group that recorded: name -> array (B, K)."""
    out = {}
    for name, group in groups.items():
        weights = group.image_weights()
        if weights is not None:
            out[name] = weights.cpu().double().numpy()
    return out


def selection_scalars(groups: Dict[str, SKGroup],
                      prefix: str = 'sk',
                      reduce_fn=None) -> Dict[str, float]:
    """Batch-mean branch weights as scalars named ``{prefix}/{group}/{branch label}``.

    Args:
        groups (dict[str, SKGroup]): Groups from :func:`sk_groups`, after a recorded forward.
        prefix (str): First component of the names. Default: 'sk'.
        reduce_fn (callable, optional): Applied to the (num_groups, K) tensor of batch means
            before it is split into scalars, e.g. a mean over distributed ranks. Default: None.

    Returns:
        dict[str, float]: One entry per branch of every group that recorded.
    """
    means, names = [], []
    for name, group in groups.items():
        weights = group.image_weights()
        if weights is not None:
            means.append(weights.mean(0))
            names.append(name)
    if not means:
        return {}
    sizes = [len(m) for m in means]
    flat = torch.cat(means)
    if reduce_fn is not None:
        flat = reduce_fn(flat)
    scalars = {}
    for name, chunk in zip(names, torch.split(flat, sizes)):
        for label, value in zip(groups[name].labels, chunk.tolist()):
            scalars[f'{prefix}/{name}/{label}'] = float(value)
    return scalars


# ---------------------------------------------------------------- scale analysis: data side


def area_bucket(areas: Sequence[float]) -> Optional[str]:
    """COCO area bucket of an image: that of the median area of its ground-truth boxes.

    The bounds are COCOeval's (32**2 and 96**2 pixels; an area equal to a bound counts in the
    upper bucket). Areas are box areas ``w * h`` in original image pixels (COCOeval uses the
    annotation's ``area``, the mask area when there is one, which is smaller than the box).

    Args:
        areas (Sequence[float]): Areas of the image's non-ignored ground-truth boxes.

    Returns:
        str | None: ``'small'``, ``'medium'`` or ``'large'``; None for an image without boxes.
    """
    if len(areas) == 0:
        return None
    median = float(np.median(np.asarray(areas, dtype=np.float64)))
    for name, lo, hi in AREA_RANGES:
        if lo <= median < hi:
            return name
    return BUCKETS[-1]


def scale_pipeline(pipeline: Sequence[dict], scale: float) -> List[dict]:
    """A copy of a test pipeline whose ``Resize`` (and fixed ``Pad`` size) is ``scale`` times.

    ``Resize(scale=(w, h))`` becomes ``Resize(scale=(w * s, h * s))`` (rounded), a
    ``scale_factor`` is multiplied, and ``Pad(size=(w, h))`` grows alike so that it still fits.

    Args:
        pipeline (Sequence[dict]): Transform configs.
        scale (float): Rescaling factor, > 0.

    Returns:
        list[dict]: The new pipeline.

    Raises:
        ValueError: If the pipeline has no ``Resize`` with ``scale`` or ``scale_factor``.
    """
    if scale <= 0:
        raise ValueError(f'scale must be > 0, got {scale}')

    def times(value):
        if isinstance(value, (int, float)):
            return int(round(value * scale))
        return tuple(int(round(v * scale)) for v in value)

    out, resized = [], False
    for t in pipeline:
        t = dict(t)
        kind = t.get('type')
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        kind = kind.split('.')[-1]
        if kind == 'Resize' and t.get('scale') is not None:
            t['scale'], resized = times(t['scale']), True
        elif kind == 'Resize' and t.get('scale_factor') is not None:
            sf = t['scale_factor']
            t['scale_factor'] = (sf * scale if isinstance(sf, (int, float)) else tuple(
                v * scale for v in sf))
            resized = True
        elif kind == 'Pad' and t.get('size') is not None:
            t['size'] = times(t['size'])
        out.append(t)
    if not resized:
        raise ValueError('scale_pipeline: the test pipeline has no Resize with `scale` or '
                         '`scale_factor`; cannot rescale the input')
    return out


def collect_scale_selection(model: nn.Module,
                            dataset,
                            pipeline: Sequence[dict],
                            scales: Sequence[float],
                            indices: Sequence[int],
                            progress: bool = True) -> Tuple[dict, dict]:
    """Run ``model`` on images of ``dataset`` at each input scale and record SK weights.

    For each scale the dataset's test pipeline is rescaled with :func:`scale_pipeline` and
    each image runs alone (batch size 1, so no batch padding enters the pooled descriptor)
    through ``model.data_preprocessor`` and ``model.extract_feat`` (backbone and neck: where
    the SK modules are; the heads do not change their weights). A model with SK modules
    outside the backbone and neck, or without ``extract_feat``, runs its full ``test_step``.

    Args:
        model (nn.Module): A detector in eval mode, with its weights loaded.
        dataset (BaseDataset): The (validation) dataset; its ``pipeline`` is replaced while
            this runs and restored after.
        pipeline (Sequence[dict]): The dataset's test pipeline config, rescaled per scale.
        scales (Sequence[float]): Input rescaling factors.
        indices (Sequence[int]): Dataset indices of the images to use.
        progress (bool): Show an :class:`mmengine.utils.ProgressBar`. Default: True.

    Returns:
        tuple[dict, dict]: ``weights[scale][group]`` is an array (num_images, K) of per-image
        mean branch weights; ``buckets[index]`` the image's area bucket (or None).
    """
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.utils import ProgressBar

    groups = sk_groups(model)
    if not groups:
        raise ValueError('collect_scale_selection: the model has no SK module '
                         '(SKAttention or SKConv)')
    names = [n for g in groups.values() for n in g.module_names]
    feats_only = hasattr(model, 'extract_feat') and all(
        n.startswith(('backbone.', 'neck.')) for n in names)

    buckets = {}
    for idx in indices:
        instances = dataset.get_data_info(idx).get('instances', [])
        areas = [(i['bbox'][2] - i['bbox'][0]) * (i['bbox'][3] - i['bbox'][1])
                 for i in instances if not i.get('ignore_flag', 0)]
        buckets[idx] = area_bucket(areas)

    base_pipeline = dataset.pipeline
    weights = OrderedDict()
    bar = ProgressBar(len(scales) * len(indices)) if progress else None
    try:
        for scale in scales:
            dataset.pipeline = Compose(scale_pipeline(pipeline, scale))
            per_group: Dict[str, list] = {name: [] for name in groups}
            for idx in indices:
                batch = pseudo_collate([dataset[idx]])
                with torch.no_grad(), recording(groups):
                    if feats_only:
                        data = model.data_preprocessor(batch, False)
                        model.extract_feat(data['inputs'])
                    else:
                        model.test_step(batch)
                    for name, w in image_selection(groups).items():
                        per_group[name].append(w[0])
                if bar is not None:
                    bar.update()
            weights[float(scale)] = OrderedDict(
                (name, np.stack(rows)) for name, rows in per_group.items() if rows)
    finally:
        dataset.pipeline = base_pipeline
    if bar is not None:
        print()
    return weights, buckets
