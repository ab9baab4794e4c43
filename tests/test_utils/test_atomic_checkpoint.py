"""AtomicCheckpointHook and its file backend, on a toy MMEngine Runner (seconds, no mmdet).

The end-to-end kill tests (SIGKILL mid-iteration and mid-save, then ``--resume``) are in
``tests/test_reliability/test_resume.py``.
"""
import os
import uuid

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from mmdet_sk.utils import AtomicLocalBackend


class ToyModel(BaseModel):
    """A linear model whose loss draws from torch's global generator, as samplers do."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=(out * torch.rand(1)).square().mean())
        return out


class FailSaveAt(Hook):
    """Raise while the checkpoint of iteration ``at_iter`` is being saved."""

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_save_checkpoint(self, runner, checkpoint):
        if runner.iter + 1 == self.at_iter:
            raise OSError('disk full (simulated)')


class ProbeRNG(Hook):
    """Record torch's RNG state once every other hook has run ``before_train``."""
    priority = 'LOWEST'
    state = None

    def before_train(self, runner):
        ProbeRNG.state = torch.get_rng_state()


def make_runner(work_dir, hook='AtomicCheckpointHook', max_iters=3, keep=-1, custom_hooks=(),
                **kwargs):
    torch.manual_seed(0)
    dataset = [dict(inputs=torch.randn(2)) for _ in range(8)]
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=dataset, sampler=dict(type='InfiniteSampler', seed=0),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type=hook, interval=1, by_epoch=False,
                                           max_keep_ckpts=keep)),
        custom_hooks=list(custom_hooks),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


def test_backend_writes_whole_files(tmp_path):
    backend = AtomicLocalBackend()
    path = tmp_path / 'sub' / 'ckpt.pth'
    backend.put(b'first', path)
    backend.put(b'second version', path)
    assert path.read_bytes() == b'second version'
    backend.put_text('text', tmp_path / 'last')
    assert (tmp_path / 'last').read_text() == 'text'
    assert sorted(os.listdir(path.parent)) == ['ckpt.pth']


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    backend = AtomicLocalBackend()
    path = tmp_path / 'ckpt.pth'
    backend.put(b'complete checkpoint', path)

    def crash(fd):
        raise OSError('killed before the rename (simulated)')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='simulated'):
        backend.put(b'half-writ', path)
    assert path.read_bytes() == b'complete checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pth']


def test_registered_as_a_file_backend():
    assert isinstance(get_file_backend(backend_args=dict(backend='atomic_local')),
                      AtomicLocalBackend)


@pytest.mark.parametrize('hook,survives', [('AtomicCheckpointHook', True),
                                           ('CheckpointHook', False)])
def test_previous_checkpoint_survives_a_failed_save(tmp_path, hook, survives):
    """MMEngine deletes the oldest kept checkpoint before writing the next one."""
    runner = make_runner(tmp_path, hook=hook, keep=1, custom_hooks=[FailSaveAt(2)])
    with pytest.raises(OSError, match='simulated'):
        runner.train()
    assert (tmp_path / 'iter_1.pth').is_file() is survives
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_1.pth')
    assert not (tmp_path / 'iter_2.pth').exists()


def test_keeps_max_keep_ckpts_once_the_new_one_is_written(tmp_path):
    make_runner(tmp_path, max_iters=4, keep=2).train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_3.pth', 'iter_4.pth']
    assert not list(tmp_path.glob('*.tmp'))


def test_rng_state_is_saved_and_restored_on_resume_only(tmp_path):
    make_runner(tmp_path, max_iters=2).train()
    checkpoint = torch.load(tmp_path / 'iter_1.pth', map_location='cpu')  # safe loader
    saved = checkpoint['rng_states']
    assert len(saved) == 1 and saved[0]['torch'].dtype == torch.uint8

    resumed = make_runner(tmp_path / 'resumed', max_iters=2, resume=True,
                          load_from=str(tmp_path / 'iter_1.pth'), custom_hooks=[ProbeRNG()])
    resumed.train()
    assert torch.equal(ProbeRNG.state, saved[0]['torch'])

    loaded = make_runner(tmp_path / 'loaded', max_iters=2,
                         load_from=str(tmp_path / 'iter_1.pth'), custom_hooks=[ProbeRNG()])
    loaded.train()  # fine-tuning from weights: the random streams start afresh
    assert not torch.equal(ProbeRNG.state, saved[0]['torch'])
