"""Hooks the reliability tests load into ``tools/train.py`` runs (``custom_imports``).

``SigkillHook`` crashes a run at a chosen moment; ``RecorderHook`` writes what a run did (losses
and images of every iteration, over all processes of a distributed run) to a JSON-lines file.
"""
import builtins
import hashlib
import json
import os
import signal

import torch
from mmengine.dist import all_gather_object, all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def _die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


class _DieMidWrite:
    """A binary file that writes half of the first buffer it gets, then SIGKILLs the process."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(bytes(data[:len(data) // 2]))
        self._file.flush()
        os.fsync(self._file.fileno())
        _die()

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)


@HOOKS.register_module()
class SigkillHook(Hook):
    """SIGKILL the process during the 1-based iteration ``at_iter``.

    Args:
        at_iter (int): The iteration to die in.
        during (str): ``'forward'``: inside the backbone's forward pass (mid-iteration);
            ``'save'``: half-way through writing that iteration's checkpoint file, whichever
            way the checkpoint hook writes it.
    """
    priority = 'VERY_HIGH'

    def __init__(self, at_iter: int, during: str = 'forward') -> None:
        assert during in ('forward', 'save')
        self.at_iter = at_iter
        self.during = during

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.during == 'forward' and runner.iter + 1 == self.at_iter:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            model.backbone.register_forward_hook(_die)

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if self.during == 'save' and runner.iter + 1 == self.at_iter:
            real_open = builtins.open

            def open_dying(file, mode='r', *args, **kwargs):
                f = real_open(file, mode, *args, **kwargs)
                return _DieMidWrite(f) if 'w' in mode and 'b' in mode else f

            builtins.open = open_dying


@HOOKS.register_module()
class RecorderHook(Hook):
    """Record a run, over all its processes, to the JSON-lines file ``out_file`` (rank 0).

    Per iteration: ``iter``, each loss averaged over the processes (the loss of the global
    batch), ``img_ids``, the images of the global batch, and ``sk_dtype``, the dtype of the
    first SKAttention's output. After training: ``param_hashes``, one SHA-1 of all
    parameters per process.
    """

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        self.sk_dtype = None

    def before_train(self, runner) -> None:
        sk = next(m for m in runner.model.modules() if type(m).__name__ == 'SKAttention')
        sk.register_forward_hook(lambda m, inputs, out: setattr(self, 'sk_dtype', str(out.dtype)))

    def _write(self, record: dict) -> None:
        if is_main_process():
            with open(self.out_file, 'a') as f:
                f.write(json.dumps(record) + '\n')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        keys = sorted(k for k in outputs if k.startswith('loss'))
        values = torch.tensor([float(outputs[k]) for k in keys], dtype=torch.float64)
        all_reduce(values)  # a sum; a no-op without a process group
        values /= get_world_size()
        ids = [s.metainfo['img_id'] for s in data_batch['data_samples']]
        ids = sorted(i for rank_ids in all_gather_object(ids) for i in rank_ids)
        self._write(dict(iter=runner.iter + 1, img_ids=ids, sk_dtype=self.sk_dtype,
                         **dict(zip(keys, values.tolist()))))

    def after_train(self, runner) -> None:
        digest = hashlib.sha1()
        for p in runner.model.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        self._write(dict(param_hashes=all_gather_object(digest.hexdigest())))
