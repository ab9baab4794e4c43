# Copyright (c) mmdet-sk contributors. All rights reserved.
"""What each arm of a seeded experiment costs: parameters, FLOPs and the train step's time
against its baseline arm, measured in one process so that the ratios share one machine state."""
import logging
import os
import os.path as osp
from typing import Dict, Sequence

import torch

from .runs import write_config


def detector_costs(runs: Dict[str, dict], baselines: Dict[str, str], work_dir: str,
                   shape: Sequence[int], rounds: int) -> dict:
    """Params, FLOPs and train-step time of every arm's detector, the time as a ratio.

    Args:
        runs (dict): Arm -> a run of it (:mod:`sk_lab.runs`), whose config is written to
            ``<work_dir>/<arm>/config.py`` and measured.
        baselines (dict): Arm -> the arm its train step is divided by (itself for a baseline).
        work_dir (str): Where the configs are written.
        shape (Sequence[int]): Input (H, W); batch 1 with three ground-truth boxes.
        rounds (int): Interleaved rounds (each calls every arm's step once); the median counts.

    Returns:
        dict: Per arm ``params``, ``flops`` (MMEngine's counter), ``train_step_ms`` and
        ``train_step_ratio`` (to its baseline), and ``threads`` and ``load_avg`` (the load
        average at the end) of the measurement.
    """
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from mmdet_sk.utils.benchmark import (build_benchmark_detector, dummy_samples,
                                          fix_proposals, interleaved, num_classes, train_step)
    from mmdet_sk.utils.complexity import model_complexity

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    configs = {}
    for arm, run in runs.items():
        os.makedirs(osp.join(work_dir, arm), exist_ok=True)
        configs[arm] = write_config(run, osp.join(work_dir, arm))
    out, steps = {}, {}
    try:
        for arm, config in configs.items():
            # every RPN proposes the same boxes: the RoI head's work is the same in every arm
            cfg = fix_proposals(Config.fromfile(config))
            flops = model_complexity(cfg, shape)
            x = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0))
            steps[arm] = train_step(build_benchmark_detector(cfg), x,
                                    dummy_samples(*shape, True, num_classes(cfg)))
            out[arm] = dict(params=flops['params'], flops=flops['flops'])
    finally:
        logger.setLevel(level)
    for fn in steps.values():  # warm-up
        fn()
    times = interleaved(steps, rounds, torch.device('cpu'))
    for arm in configs:
        out[arm]['train_step_ms'] = round(times[arm], 1)
        out[arm]['train_step_ratio'] = round(times[arm] / times[baselines[arm]], 3)
    return dict(arms=out, threads=torch.get_num_threads(), load_avg=os.getloadavg()[0])
