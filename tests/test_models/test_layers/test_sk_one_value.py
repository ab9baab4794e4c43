"""SKAttention on a map with one value per channel (batch 1, 1x1) in training mode.

A training-mode BatchNorm has no batch statistics there (torch raises "Expected more than 1
value per channel"); the block's branch norms normalise with their running statistics instead,
as in eval mode, and leave them unchanged. On every larger map they train as before.
"""
import copy

import pytest
import torch

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.models.layers._reference_sk import ReferenceSKAttention
from sk_test_utils import with_running_stats

PAPER = dict(kernels=(3, 3), dilations=(1, 2), groups=32)


def _norm_state(block):
    return {name: buf.clone() for name, buf in block.named_buffers()}


@pytest.mark.parametrize('kwargs', [{}, dict(PAPER, gate=True)])
def test_one_value_per_channel_uses_running_stats_without_updating_them(kwargs):
    torch.manual_seed(0)
    block = with_running_stats(SKAttention(64, **kwargs))
    x = torch.randn(1, 64, 1, 1)
    with torch.no_grad():
        expected = block(x)  # eval mode: the running statistics
    block.train()
    before = _norm_state(block)
    xt = x.clone().requires_grad_()
    out = block(xt)
    torch.testing.assert_close(out, expected)
    for name, buf in block.named_buffers():
        assert torch.equal(buf, before[name]), f'{name} was updated'
    assert all(branch.bn.training for branch in block.convs)  # the norms keep their mode
    out.square().sum().backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0
    for branch in block.convs:  # the affine parameters still learn
        assert branch.bn.weight.grad is not None and branch.bn.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('shape', [(2, 64, 1, 1), (1, 64, 1, 2), (1, 64, 3, 3)])
def test_larger_maps_train_with_batch_statistics_as_the_reference(shape):
    torch.manual_seed(0)
    ref = ReferenceSKAttention(64, kernels=(3, 5), group=32, reduction=4, L=8)
    block = SKAttention(64, kernels=(3, 5), groups=32, reduction=4, L=8)
    block.load_state_dict(ref.state_dict(), strict=True)
    ref.train()
    block.train()
    x = torch.randn(shape)
    torch.testing.assert_close(block(x), ref(x), rtol=1e-5, atol=1e-5)
    for name, buf in block.named_buffers():
        torch.testing.assert_close(buf, dict(ref.named_buffers())[name])
    assert all(branch.bn.num_batches_tracked.item() == 1 for branch in block.convs)


def test_sync_bn_and_untracked_bn_are_left_alone():
    """SyncBN gathers statistics across ranks; a BN without running statistics has none."""
    x = torch.randn(1, 32, 1, 1)
    for norm_cfg in (dict(type='SyncBN'), dict(type='BN', track_running_stats=False)):
        block = SKAttention(32, kernels=(3, ), norm_cfg=norm_cfg).train()
        with pytest.raises(ValueError, match='more than 1 value per channel'):
            block(x)


def test_compiles_whole_in_training_at_one_value_per_channel():
    torch.manual_seed(0)
    block = with_running_stats(SKAttention(32, **dict(PAPER, groups=8), reduction=4, L=8))
    block.train()
    compiled = torch.compile(copy.deepcopy(block), fullgraph=True, backend='aot_eager')
    for shape in [(1, 32, 1, 1), (2, 32, 5, 5)]:
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), block(x))
