# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Load MMEngine checkpoints with torch>=2.6's safe ``torch.load``.

MMEngine 0.10.7 calls ``torch.load(filename, map_location=...)`` without ``weights_only``.
Since torch 2.6 that means ``weights_only=True``, which refuses what MMEngine itself saves
besides tensors: the message hub's ``HistoryBuffer`` objects and the numpy arrays, dtypes and
scalars inside them. Rather than switching the safe loader off, this module adds exactly
those globals to torch's allow-list, so ``load_from``, ``--resume`` and
``tools/test.py CONFIG CHECKPOINT`` work while any other pickled object is still refused.
"""
from typing import List

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals found in checkpoints written by MMEngine's Runner."""
    multiarray = getattr(np, '_core', None) or np.core
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                           np.int32, np.int16, np.int8, np.uint8, np.bool_)}
    return [
        HistoryBuffer,
        multiarray.multiarray._reconstruct,
        multiarray.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtypes, key=lambda t: t.__name__),
    ]


def allow_mmengine_checkpoints() -> None:
    """Add MMEngine's checkpoint globals to ``torch.load``'s safe allow-list (idempotent)."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
