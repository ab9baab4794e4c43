# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Load MMEngine checkpoints with torch>=2.6's safe ``torch.load``.

MMEngine 0.10.7 calls ``torch.load(filename, map_location=...)`` without ``weights_only``.
Since torch 2.6 that means ``weights_only=True``, which refuses what MMEngine itself saves
besides tensors: the message hub's ``HistoryBuffer`` objects and the numpy arrays, dtypes and
scalars inside them, and the statistics methods each ``HistoryBuffer`` pickles by reference
(``getattr(HistoryBuffer, 'mean')``). Rather than switching the safe loader off, this module
adds exactly those globals to torch's allow-list, ``getattr`` in a form restricted to
``HistoryBuffer``'s public methods, so ``load_from``, ``--resume`` and
``tools/test.py CONFIG CHECKPOINT`` work while any other pickled object is still refused.

``read_checkpoint`` and ``check_checkpoint_fits`` are the checks ``tools/train.py`` and
``tools/test.py`` run on a checkpoint before anything is built: a truncated file or one of
another architecture gives an error that names the file and what is wrong with it.
"""
import glob
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict
from typing import List, Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from torch import nn

from .torch_compat import torch_load_is_weights_only


def history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` as MMEngine checkpoints use it, and nothing more.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which pickle as
    ``getattr(HistoryBuffer, 'min')``. Registered for the safe loader under the names
    ``__builtin__.getattr`` and ``builtins.getattr``, this function resolves exactly
    those: public attributes of ``HistoryBuffer``. Anything else is refused.
    """
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') \
            and hasattr(HistoryBuffer, name):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Refusing getattr({obj!r}, {name!r}) in a checkpoint: the safe loader allows '
        f'getattr only on HistoryBuffer\'s public methods')


def mmengine_checkpoint_globals() -> List[object]:
    """The non-tensor globals found in checkpoints written by MMEngine's Runner."""
    # numpy >= 2 keeps it in np._core; numpy 1.x in np.core (its np._core has no multiarray).
    multiarray = np._core if hasattr(getattr(np, '_core', None), 'multiarray') else np.core
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                           np.int32, np.int16, np.int8, np.uint8, np.bool_)}
    return [
        HistoryBuffer,
        multiarray.multiarray._reconstruct,
        multiarray.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtypes, key=lambda t: t.__name__),
        (history_buffer_getattr, '__builtin__.getattr'),  # pickle protocol 2 (torch.save)
        (history_buffer_getattr, 'builtins.getattr'),
    ]


def allow_mmengine_checkpoints() -> bool:
    """Add MMEngine's checkpoint globals to ``torch.load``'s safe allow-list (idempotent).

    Only where ``torch.load`` defaults to the safe loader (torch >= 2.6); older torch loads
    MMEngine's checkpoints as they are and has no (or an older) allow-list API.

    Returns:
        bool: Whether the allow-list was extended.
    """
    if not torch_load_is_weights_only():
        return False
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    return True


def _checkpoints_beside(filename: str) -> str:
    """``' Other checkpoints in DIR: a.pth, b.pth.'`` or ``''``, for error messages."""
    dirname = osp.dirname(osp.abspath(filename))
    found = sorted(glob.glob(osp.join(dirname, '*.pth')), key=osp.getmtime)
    found = [osp.basename(p) for p in found if osp.abspath(p) != osp.abspath(filename)]
    return f' Other checkpoints in {dirname}: {", ".join(found)}.' if found else ''


def read_checkpoint(filename: str) -> dict:
    """Load a local checkpoint as MMEngine does, with errors that name the file.

    The file is memory-mapped when it is in torch's zip format, so checking a large
    checkpoint reads little of it.

    Args:
        filename (str): Path of the checkpoint.

    Returns:
        dict: The checkpoint (tensors on the CPU).

    Raises:
        FileNotFoundError: The file does not exist.
        RuntimeError: The file cannot be read: truncated or corrupt, or holding objects that
            torch's safe loader refuses. The message names the file and what to do.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} does not exist.'
                                f'{_checkpoints_beside(filename)}')
    try:
        return torch.load(filename, map_location='cpu', mmap=zipfile.is_zipfile(filename))
    except Exception as e:  # zip, pickle and storage errors of every kind
        error = e
    lines = str(error).splitlines() or ['']
    refused = [line for line in lines if 'Unsupported global' in line]
    if refused:
        raise RuntimeError(
            f'Checkpoint {filename} holds Python objects that torch.load refuses to unpickle '
            f'safely (weights_only=True): {refused[0].strip()} Only load checkpoints you '
            f'trust; see torch.serialization.add_safe_globals.') from error
    raise RuntimeError(
        f'Checkpoint {filename} ({osp.getsize(filename)} bytes) cannot be read '
        f'({type(error).__name__}: {lines[0]}). It is truncated or corrupt: written by a run '
        f'killed while saving, or an interrupted copy or download. Use another checkpoint or '
        f'fetch it again.{_checkpoints_beside(filename)}') from error


def new_weights_summary(model: nn.Module, checkpoint: dict) -> Optional[str]:
    """One line on what of ``model`` a checkpoint does not provide, or None if it has it all.

    SK blocks none of whose keys the checkpoint has (a checkpoint of the detector without SK;
    for an ``SKConv``, none but the replaced conv's ``weight``/``bias``) keep their
    initialisation when it is loaded (see :class:`SKAttention`); they are counted, not listed.
    Any other weight the checkpoint lacks is left to MMEngine's own warning.

    Args:
        model (nn.Module): The (unwrapped) model the checkpoint is loaded into.
        checkpoint (dict): The checkpoint (or a bare state dict).

    Returns:
        str | None: ``'T1 of T tensors (V1 of V values) from the checkpoint; T2 tensors (V2
        values) new in N SK blocks keep their initialisation (...)'``.
    """
    from ..models.layers import SKAttention, SKConv
    source = checkpoint.get('state_dict', checkpoint)
    keys = {re.sub(r'^module\.', '', k) for k in source}
    own = OrderedDict((k, v) for k, v in model.state_dict().items()
                      if not k.endswith('num_batches_tracked'))
    missing = [k for k in own if k not in keys]
    if not missing:
        return None

    def sk_keys_absent(name: str, module: nn.Module) -> bool:
        # an SKConv's weight (and bias) are those of the conv it replaced: not SK's own
        kept = {f'{name}.{key}' for key in getattr(module, 'inherited_keys', ())}
        return not any(k.startswith(name + '.') and k not in kept for k in keys)

    blocks = {name + '.': m for name, m in model.named_modules()
              if isinstance(m, (SKAttention, SKConv)) and sk_keys_absent(name, m)}
    new = [k for k in missing if k.startswith(tuple(blocks))]
    count = lambda names: sum(own[k].numel() for k in names)  # noqa: E731
    total = count(own)
    line = (f'{len(own) - len(missing)} of {len(own)} tensors ({total - count(missing):,} of '
            f'{total:,} values) from the checkpoint; {len(new)} tensors ({count(new):,} values) '
            f'new in {len(blocks)} SK blocks keep their initialisation')
    if blocks and all(m.gate is not None for m in blocks.values()):
        line += (' (gate=True: each computes what it replaced, the identity or the conv, '
                 'until its gate moves)')
    others = len(missing) - len(new)
    if others:
        line += f'; {others} other tensors are missing (listed by MMEngine below)'
    return line


def _key_list(keys: List[str], limit: int = 8) -> str:
    more = f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def check_checkpoint_fits(model: nn.Module, checkpoint: dict, filename: str) -> None:
    """Raise if some of ``model``'s weights would not come from ``checkpoint``.

    The state dict is loaded as MMEngine's Runner loads it (a ``module.`` prefix stripped,
    the model's own key conversions applied), into ``model`` itself: pass a throw-away model,
    e.g. one built under ``torch.device('meta')``. Keys the checkpoint has and the model does
    not (``unexpected``) are allowed; MMEngine reports them as a warning.

    Args:
        model (nn.Module): A model built from the config that will load the checkpoint.
        checkpoint (dict): The loaded checkpoint (or a bare state dict).
        filename (str): The checkpoint's path, for the message.

    Raises:
        ValueError: Model weights are missing from the checkpoint or differ in shape; the
            message lists them, with the checkpoint keys the model does not have.
    """
    source = checkpoint.get('state_dict', checkpoint)
    state_dict = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in source.items())
    own = model.state_dict()
    mismatched = {
        k: f'{k} {tuple(v.shape)} vs {tuple(own[k].shape)} in the model'
        for k, v in state_dict.items()
        if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)
    }
    loadable = OrderedDict((k, v) for k, v in state_dict.items() if k not in mismatched)
    if getattr(source, '_metadata', None) is not None:
        loadable._metadata = source._metadata  # module versions, for their key conversions
    try:
        result = model.load_state_dict(loadable, strict=False, assign=True)
    except RuntimeError as e:  # a shape mismatch after the model's own key conversion
        raise ValueError(f'Checkpoint {filename} does not fit the model: {e}') from e
    missing = [k for k in result.missing_keys
               if not k.endswith('num_batches_tracked') and k not in mismatched]
    if not missing and not mismatched:
        return
    total = sum(1 for k in own if not k.endswith('num_batches_tracked'))
    parts = [f'Checkpoint {filename} does not fit the model: '
             f'{len(missing) + len(mismatched)} of the model\'s {total} weights would not come '
             f'from it.']
    if missing:
        parts.append(f'Missing from the checkpoint ({len(missing)}): {_key_list(missing)}.')
    if mismatched:
        parts.append(f'Shape mismatch ({len(mismatched)}): '
                     f'{_key_list(list(mismatched.values()), 4)}.')
    if result.unexpected_keys:
        parts.append(f'In the checkpoint but not in the model ({len(result.unexpected_keys)}):'
                     f' {_key_list(result.unexpected_keys)}.')
    parts.append('The checkpoint was trained with another architecture or config; evaluate it '
                 'with the config it was trained with.')
    raise ValueError(' '.join(parts))
