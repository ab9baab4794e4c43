# Copyright (c) mmdet-sk contributors. All rights reserved.
"""What the benchmark tools share: one call's time, interleaved rounds, trained-like norms, and
a detector set up for timing (its proposals fixed, dummy samples, one training step)."""
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from mmengine.config import Config
from torch import nn


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
    """Median milliseconds per callable over interleaved rounds, and the number of rounds.

    One call of each first (a warm-up, and the cost of a round); then as many rounds as fit
    in ``budget`` seconds, at least ``min_rounds`` and at most 25.
    """
    first = {k: time_ms(fn, device) for k, fn in fns.items()}
    rounds = max(min_rounds, min(25, int(budget * 1e3 / sum(first.values()))))
    return interleaved(fns, rounds, device), rounds


def trained_like_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm of ``model`` random statistics and affine parameters, in place.

    A trained network's norms are far from the fresh 0 / 1 (a fresh mmdet ResNet block ends in
    a zero-initialised norm, an identity that hides mistakes): comparisons and timings of
    equivalent networks use such norms.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def fix_proposals(cfg: Config) -> Config:
    """Let a two-stage detector's RPN keep ``max_per_img`` proposals at test time, always.

    With random weights the RPN's NMS keeps a weight-dependent number of proposals, and the
    RoI head costs in proportion: NMS at IoU 1.0 suppresses nothing, so every model's RoI head
    gets the config's ``test_cfg.rpn.max_per_img`` (as a trained RPN on a COCO image mostly
    does). A FLOP count builds its model from this config too.
    """
    rpn = cfg.model.get('test_cfg', {}).get('rpn')
    if rpn is not None:
        rpn.nms.iou_threshold = 1.0
    return cfg


def build_benchmark_detector(cfg: Config) -> nn.Module:
    """The detector of ``cfg``, initialised; a two-stage one proposes its anchors.

    The RoI head's cost depends on the size of the boxes it pools (RoIAlign samples a large
    box more), and a random RPN picks different boxes in different models. Zero classification
    and regression convs make every model's RPN propose the same anchors, so the models'
    latencies differ by their backbone and neck only.
    """
    from mmdet.registry import MODELS
    from mmengine.model import revert_sync_batchnorm
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    if hasattr(model, 'rpn_head'):
        for layer in (model.rpn_head.rpn_cls, model.rpn_head.rpn_reg):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def train_step(model: nn.Module, x: torch.Tensor, batch: list) -> Callable:
    """One training step of ``model`` on ``x`` and ``batch`` (see :func:`dummy_samples`) as a
    callable: the losses, backward and an SGD step at lr 0 (the work of a step, with the same
    weights, and proposals, in every call)."""
    optim = torch.optim.SGD(model.parameters(), lr=0., momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        model.train()
        loss, _ = model.parse_losses(model(x, batch, mode='loss'))
        optim.zero_grad()
        loss.backward()
        optim.step()

    return step


def num_classes(cfg: Config) -> int:
    """Classes of the detector of ``cfg`` (its RoI head's or its dense head's)."""
    head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
    return head.num_classes


def dummy_samples(h: int, w: int, with_gt: bool, classes: int = 80) -> list:
    """One ``DetDataSample`` of an (h, w) input, with three ground-truth boxes if ``with_gt``
    (labels 0, 5, 17 modulo ``classes``), as a batch for ``model(x, batch, mode=...)``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    sample = DetDataSample(metainfo=meta)
    if with_gt:
        boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.3, 0.2, 0.9, 0.7], [0.6, 0.6, 0.8, 0.95]])
        sample.gt_instances = InstanceData(
            bboxes=boxes * torch.tensor([w, h, w, h]),
            labels=torch.tensor([0, 5, 17]) % classes)  # the demo has 5 classes
    return [sample]
