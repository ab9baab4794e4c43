"""Resume loses nothing: runs SIGKILLed mid-iteration or mid-save resume to the same weights.

The SK demo detector trains 6 iterations on the tiny set (batch 2, deterministic, SGD with
momentum, a linear LR schedule, a random flip, checkpoints every 2 iterations). Interrupted and
resumed with ``tools/train.py --resume``, it must see the same images in the same order and end
with bit-identical weights, optimizer state and scheduler state as the uninterrupted run.
"""
import json
import signal

import pytest
import torch

from mmdet_sk.utils.checkpoint import read_checkpoint
from reliability_utils import Background, tool, write_config


def recorder(path):
    return dict(type='RecorderHook', out_file=str(path))


def records(path):
    lines = [json.loads(line) for line in open(path)]
    return [r for r in lines if 'iter' in r], [r for r in lines if 'param_hashes' in r]


@pytest.fixture(scope='module')
def uninterrupted(tiny_coco, tmp_path_factory):
    """The run every resumed run must reproduce, started in the background.

    Returns a function that waits for it and returns its work dir and iteration records.
    """
    tmp = tmp_path_factory.mktemp('uninterrupted')
    config = write_config(tmp / 'cfg.py', tiny_coco, custom_hooks=[recorder(tmp / 'log.jsonl')])
    run = Background('train.py', config, '--work-dir', str(tmp / 'work'))

    def result():
        run.wait()
        iters, _ = records(tmp / 'log.jsonl')
        assert [r['iter'] for r in iters] == list(range(1, 7))
        return tmp / 'work', iters

    yield result
    run.proc.kill()
    run.proc.wait()


def assert_same_final_state(work, reference):
    """Bit-identical weights, optimizer and scheduler state in ``iter_6.pth``."""
    ours = torch.load(work / 'iter_6.pth', map_location='cpu')
    ref = torch.load(reference / 'iter_6.pth', map_location='cpu')
    diff = max((ours['state_dict'][k].double() - v.double()).abs().max().item()
               for k, v in ref['state_dict'].items())
    print(f'max abs weight difference, resumed vs uninterrupted: {diff}')
    assert ours['state_dict'].keys() == ref['state_dict'].keys()
    assert all(torch.equal(ours['state_dict'][k], v) for k, v in ref['state_dict'].items())
    assert ours['optimizer']['param_groups'] == ref['optimizer']['param_groups']
    states = [(name, a, ref['optimizer']['state'][i][name])
              for i, s in ours['optimizer']['state'].items() for name, a in s.items()]
    assert any(name == 'momentum_buffer' for name, _, _ in states)
    assert all(torch.equal(a, b) for _, a, b in states)
    assert ours['param_schedulers'] == ref['param_schedulers']
    assert ours['meta']['iter'] == ref['meta']['iter'] == 6


def test_sigkill_mid_iteration_then_resume_is_exact(tiny_coco, tmp_path, uninterrupted):
    work, log = tmp_path / 'work', tmp_path / 'log.jsonl'
    killed = write_config(tmp_path / 'killed.py', tiny_coco, custom_hooks=[
        recorder(log), dict(type='SigkillHook', at_iter=5, during='forward')])
    out = tool('train.py', killed, '--work-dir', str(work), expect_rc=-signal.SIGKILL)
    assert 'Iter(train) [4/6]' in out and 'Iter(train) [5/6]' not in out
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth']

    config = write_config(tmp_path / 'cfg.py', tiny_coco, custom_hooks=[recorder(log)])
    out = tool('train.py', config, '--work-dir', str(work), '--resume')
    assert 'resumed epoch: 0, iter: 4' in out
    assert 'Restored the RNG state of iteration 4' in out
    assert 'Iter(train) [5/6]' in out and 'Iter(train) [4/6]' not in out

    reference, ref_iters = uninterrupted()
    iters, _ = records(log)  # iterations 1-4 of the killed run, 5-6 of the resumed one
    assert [r['img_ids'] for r in iters] == [r['img_ids'] for r in ref_iters]  # data order
    assert [r['loss'] for r in iters] == [r['loss'] for r in ref_iters]  # bit for bit
    assert_same_final_state(work, reference)


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tiny_coco, tmp_path, uninterrupted):
    """With max_keep_ckpts=1 MMEngine deletes iter_2.pth before writing iter_4.pth; here the
    process dies half-way through writing iter_4.pth, and iter_2.pth must still be there."""
    work = tmp_path / 'work'
    killed = write_config(tmp_path / 'killed.py', tiny_coco, keep=1, custom_hooks=[
        dict(type='SigkillHook', at_iter=4, during='save')])
    tool('train.py', killed, '--work-dir', str(work), expect_rc=-signal.SIGKILL)
    assert sorted(p.name for p in work.glob('iter_*')) == ['iter_2.pth', 'iter_4.pth.tmp']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    assert read_checkpoint(str(work / 'iter_2.pth'))['meta']['iter'] == 2

    config = write_config(tmp_path / 'cfg.py', tiny_coco, keep=1)
    out = tool('train.py', config, '--work-dir', str(work), '--resume')
    assert 'resumed epoch: 0, iter: 2' in out
    assert sorted(p.name for p in work.glob('iter_*')) == ['iter_6.pth']  # .tmp replaced
    assert_same_final_state(work, uninterrupted()[0])
