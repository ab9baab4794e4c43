# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Checkpoints that survive a crash and resume bit for bit.

``default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', ...))`` takes the arguments
of MMEngine's ``CheckpointHook`` and changes three things:

* **Atomic writes.** MMEngine writes ``iter_N.pth`` in place, so a run killed while saving
  leaves a truncated file under the final name. Here a local checkpoint is written to
  ``iter_N.pth.tmp``, flushed to disk and renamed over the final name (``os.replace``), so a
  checkpoint file is either complete or absent.
* **The previous checkpoint stays until the new one is complete.** With ``max_keep_ckpts``,
  MMEngine deletes the oldest kept checkpoint *before* writing the new one; with
  ``max_keep_ckpts=1`` a crash in between leaves none. Here the deletion waits until the new
  checkpoint and ``last_checkpoint`` are written.
* **The RNG state is saved and restored.** MMEngine's resume restores weights, optimizer,
  schedulers, counters and (by replaying the data loader) the data order and augmentations,
  but not torch's random generators, which the model draws from (e.g. the proposal samplers
  of two-stage detectors). This hook saves every rank's torch (and CUDA) generator state
  with each checkpoint and restores it when training resumes from it, so a resumed run
  continues exactly as the uninterrupted one.

One window remains: MMEngine writes the small ``last_checkpoint`` text file in place after the
checkpoint; a kill within those microseconds leaves it empty, and ``tools/train.py --resume``
then stops with a message listing the complete checkpoints to resume from explicitly.
"""
import logging
import os
import os.path as osp
from typing import Optional, Union

import mmengine
import torch
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .checkpoint import new_weights_summary

ATOMIC_BACKEND = 'atomic_local'


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose writes are atomic.

    ``put`` writes ``<filepath>.tmp``, flushes and fsyncs it, then renames it over ``filepath``
    with ``os.replace``. A process killed at any point leaves ``filepath`` either as it was or
    complete; at worst a stale ``.tmp`` file remains, which the next write of the same name
    replaces. Registered as the file backend ``'atomic_local'``.
    """

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        """Write bytes to ``filepath`` atomically (creating its directory if needed)."""
        filepath = os.fspath(filepath)
        dirname = osp.dirname(filepath) or '.'
        mmengine.mkdir_or_exist(dirname)
        tmp = f'{filepath}.tmp'
        try:
            with open(tmp, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
        if os.name == 'posix':  # make the rename itself durable
            fd = os.open(dirname, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically."""
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def _rng_state() -> dict:
    """This process's torch generator states (CPU, and CUDA where available)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return dict(torch=torch.get_rng_state(), cuda=cuda)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's :class:`CheckpointHook` with crash-safe writes and exact resume.

    See the module docstring for what changes. Checkpoints keep MMEngine's format plus one
    key, ``rng_states`` (one entry per rank), so they load anywhere MMEngine's do.

    Args:
        *args, **kwargs: The arguments of :class:`mmengine.hooks.CheckpointHook`. Writes are
            atomic when the checkpoints go to a local directory and neither ``backend_args``
            nor ``file_client_args`` is given (a remote backend is used as configured).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending_rng: Optional[list] = None
        self._loaded_rng: Optional[tuple] = None

    def before_train(self, runner) -> None:
        """Choose the atomic backend for a local ``out_dir``; restore the RNG on resume."""
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        if (self.backend_args is None and self.file_client_args is None
                and '://' not in str(out_dir)):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        self._restore_rng(runner)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save like MMEngine, but delete the oldest kept checkpoint only afterwards."""
        # Collective: every rank gets here (Runner.save_checkpoint itself runs on rank 0 only).
        self._pending_rng = all_gather_object(_rng_state())
        oldest = None
        if (self.max_keep_ckpts > 0 and len(self.keep_ckpt_ids) == self.max_keep_ckpts
                and self.keep_ckpt_ids[-1] != step):
            oldest = self.keep_ckpt_ids.popleft()  # so that MMEngine finds room, deletes nothing
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self._pending_rng = None
        if oldest is not None and is_main_process():
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(oldest))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # DeepSpeed saves directories
                self.file_backend.rmtree(path)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add the ranks' RNG states to a checkpoint saved by this hook."""
        if self._pending_rng is not None:
            checkpoint['rng_states'] = self._pending_rng

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Say in one line what the checkpoint does not provide (new SK weights, counted);
        remember the loaded RNG states, applied if training resumes from them."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        summary = new_weights_summary(model, checkpoint)
        if summary:
            runner.logger.info(f'Loading {summary}')
        meta = checkpoint.get('meta') or {}
        self._loaded_rng = (meta.get('iter'), checkpoint.get('rng_states'))

    def _restore_rng(self, runner) -> None:
        if self._loaded_rng is None:
            return
        (ckpt_iter, states), self._loaded_rng = self._loaded_rng, None
        # A resumed run starts at the checkpoint's iteration; ``load_from`` starts at 0.
        if states is None or runner.iter == 0 or runner.iter != ckpt_iter:
            return
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            print_log(f'AtomicCheckpointHook: the checkpoint holds RNG states of '
                      f'{len(states)} processes, this run has {world_size}; the random '
                      f'streams start afresh', logger='current', level=logging.WARNING)
            return
        torch.set_rng_state(states[rank]['torch'])
        if states[rank]['cuda'] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states[rank]['cuda'])
        runner.logger.info(f'Restored the RNG state of iteration {ckpt_iter}')
