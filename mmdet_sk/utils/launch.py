# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Run MMDetection's own command-line tools with mmdet-sk set up first."""
import os
import os.path as osp
import runpy
import sys
from typing import List, Optional

import torch


def cpu_distributed_args(argv: List[str]) -> List[str]:
    """Prepare a ``--launcher pytorch`` run on a machine without CUDA.

    MMEngine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` and wraps the model
    in DDP with ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only torch. Here the gloo
    process group is initialised before the Runner is built (the Runner then keeps it), and
    the returned options make the Runner wrap the model with ``device_ids=None``. With CUDA,
    nothing changes: NCCL and one GPU per process, as in MMDetection.

    Args:
        argv (list[str]): The tool's command line, without the program name.

    Returns:
        list[str]: Options to append to the command line.
    """
    launcher = None
    for i, arg in enumerate(argv):
        if arg == '--launcher' and i + 1 < len(argv):
            launcher = argv[i + 1]
        elif arg.startswith('--launcher='):
            launcher = arg.split('=', 1)[1]
    if launcher != 'pytorch' or torch.cuda.is_available():
        return []
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    return [
        '--cfg-options', 'model_wrapper_cfg.type=MMDistributedDataParallel',
        'model_wrapper_cfg.device_ids=None', 'env_cfg.dist_cfg.backend=gloo'
    ]


def run_mmdet_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run ``mmdet/.mim/tools/<name>`` as ``__main__`` after importing ``mmdet_sk``.

    Importing ``mmdet_sk`` registers its modules and allow-lists MMEngine's checkpoint
    contents for ``torch.load``'s safe loader, so MMDetection's tool works unchanged.

    Args:
        name (str): The tool's file name, e.g. ``'train.py'`` or ``'test.py'``.
        argv (list[str], optional): Its arguments. Default: ``sys.argv[1:]``.
    """
    import mmdet

    import mmdet_sk  # noqa: F401
    argv = list(sys.argv[1:] if argv is None else argv)
    argv += cpu_distributed_args(argv)
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'MMDetection tool {path} is missing; reinstall mmdet==3.3.0')
    sys.argv = [path] + argv
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    runpy.run_path(path, run_name='__main__')
