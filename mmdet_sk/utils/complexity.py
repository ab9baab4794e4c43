# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Parameters and FLOPs of a detector config, with MMEngine's ``get_model_complexity_info``.

The model is built from the config alone (no checkpoint, backbone ``init_cfg`` set to None so
that nothing is downloaded), in eval mode, with SyncBN turned into BN. It runs once in
``mode='tensor'`` on a random (1, 3, H, W) input; H and W are padded up to the data
preprocessor's ``pad_size_divisor``, as a real batch would be. Default shape: the test
pipeline's ``Resize`` scale, else 800 x 1333.

The numbers are those of MMEngine's counter (fvcore rules): one multiply-add counts as one
FLOP, and operators it has no rule for count 0. For two-stage detectors the RoI head's share
depends on the number of proposals the randomly initialised RPN keeps (at most the config's
``test_cfg.rpn.max_per_img``), as in MMDetection's own ``get_flops.py``.
"""
import copy
from typing import Optional, Sequence, Tuple

DEFAULT_SHAPE = (800, 1333)


def default_shape(cfg) -> Tuple[int, int]:
    """(H, W) of the first ``Resize`` with a ``scale`` in the test pipeline, else 800 x 1333."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for t in pipeline:
        if str(t.get('type', '')).split('.')[-1] == 'Resize' and t.get('scale') is not None:
            scale = t['scale']
            w, h = (scale, scale) if isinstance(scale, int) else scale
            return int(h), int(w)
    return DEFAULT_SHAPE


def model_complexity(cfg, shape: Optional[Sequence[int]] = None,
                     show_table: bool = False) -> dict:
    """Count the parameters and FLOPs of the detector of ``cfg``.

    Args:
        cfg (Config): A detector config (not modified).
        shape (Sequence[int], optional): Input (H, W). Default: :func:`default_shape`.
        show_table (bool): Also return MMEngine's per-module table. Default: False.

    Returns:
        dict: ``flops`` and ``params`` (ints), their strings ``flops_str`` and
        ``params_str``, ``input_shape`` (1, 3, H, W) and, with ``show_table``, ``table``.
    """
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.analysis import get_model_complexity_info
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from torch import nn

    cfg = copy.deepcopy(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if 'init_cfg' in cfg.model.get('backbone', {}):
        cfg.model.backbone.init_cfg = None
    h, w = shape if shape is not None else default_shape(cfg)
    divisor = cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1) or 1
    h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor

    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                         batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))

    class TensorForward(nn.Module):
        """The detector's ``forward(inputs, [sample], mode='tensor')`` as a one-input module."""

        def __init__(self, detector: nn.Module) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, inputs):
            return self.detector(inputs, [sample], mode='tensor')

    inputs = torch.rand(1, 3, h, w)
    with torch.no_grad():
        info = get_model_complexity_info(
            TensorForward(model), inputs=(inputs, ), show_table=show_table, show_arch=False)
    out = dict(flops=int(info['flops']), params=int(info['params']),
               flops_str=info['flops_str'], params_str=info['params_str'],
               input_shape=(1, 3, h, w))
    if show_table:
        out['table'] = info['out_table']
    return out
