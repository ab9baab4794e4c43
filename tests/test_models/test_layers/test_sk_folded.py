"""SKAttention's inference and memory-format paths: folded BN (ours and mmcv's), channels-last."""
import copy

import pytest
import torch
from mmcv.cnn import fuse_conv_bn
from torch import nn

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.models.layers._reference_sk import ReferenceSKAttention
from sk_test_utils import requires_torch, with_running_stats

PRESETS = [
    dict(kernels=(1, 3, 5, 7)),
    dict(kernels=(3, 3), dilations=(1, 2), groups=8, reduction=4, L=8),
    dict(kernels=(3, 5), groups=32, reduction=4, L=8),
]


def _trained_block(**kwargs) -> SKAttention:
    """A block whose BatchNorms carry statistics and affine parameters far from the defaults."""
    torch.manual_seed(0)
    return with_running_stats(SKAttention(32, **kwargs), gates=False)


@pytest.mark.parametrize('kwargs', PRESETS)
def test_folded_block_equals_eval_block(kwargs):
    block = _trained_block(**kwargs)
    x = torch.randn(2, 32, 11, 9)
    with torch.no_grad():
        expected = block(x)
        folded = copy.deepcopy(block)
        assert folded.fold_bn() is folded
        torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    assert all(isinstance(branch.bn, nn.Identity) for branch in folded.convs)
    assert not any('.bn.' in key for key in folded.state_dict())
    # A second call finds nothing left to fold and changes nothing.
    weights = [b.conv.weight.clone() for b in folded.convs]
    folded.fold_bn()
    for b, w in zip(folded.convs, weights):
        assert torch.equal(b.conv.weight, w)


def test_mmcv_fuse_conv_bn_gives_the_same_block():
    block = _trained_block(**PRESETS[1])
    ours = copy.deepcopy(block).fold_bn()
    theirs = fuse_conv_bn(copy.deepcopy(block))
    assert all(isinstance(branch.bn, nn.Identity) for branch in theirs.convs)
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), block(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-6, atol=1e-6)


def test_fold_bn_needs_eval_mode_and_batchnorm():
    with pytest.raises(RuntimeError, match='eval mode'):
        SKAttention(16, kernels=(3, )).fold_bn()
    gn = SKAttention(16, kernels=(3, ), norm_cfg=dict(type='GN', num_groups=4)).eval()
    with pytest.raises(TypeError, match='BatchNorm'):
        gn.fold_bn()
    no_stats = SKAttention(16, kernels=(3, ), norm_cfg=dict(type='BN', track_running_stats=False))
    with pytest.raises(TypeError, match='running'):
        no_stats.eval().fold_bn()


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_channels_last_input_matches_nchw(mode):
    block = _trained_block(**PRESETS[1])
    twin = copy.deepcopy(block)
    getattr(block, mode)()
    getattr(twin, mode)()
    x = torch.randn(2, 32, 10, 7)
    x_nchw = x.clone().requires_grad_()
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y_nchw, y_cl = block(x_nchw), twin(x_cl)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert y_nchw.is_contiguous()
    torch.testing.assert_close(y_cl, y_nchw, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(x)
    y_nchw.backward(grad)
    y_cl.backward(grad)
    torch.testing.assert_close(x_cl.grad, x_nchw.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(block.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


@requires_torch('2.13', 'saved-map counts of torch 2.13; torch 2.1 saves one more')
def test_training_keeps_two_maps_per_branch():
    """The saved activations of one training forward: two maps a branch, the reference's three."""
    torch.manual_seed(0)
    ref = ReferenceSKAttention(32, (3, 3), 4, 8, 8, (1, 2))
    ours = SKAttention(32, (3, 3), (1, 2), 4, 8, 8)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 32, 12, 12, requires_grad=True)

    def saved_maps(module):
        storages = {}

        def pack(t):
            if t.numel() >= x.numel():  # maps; vectors and weights are negligible
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x)
        return sum(storages.values()) / (x.numel() * x.element_size())

    assert saved_maps(ref) == 2 * 3 + 1  # the input, conv, ReLU and stacked maps
    assert saved_maps(ours) == 2 * 2 + 1  # the input, conv and BN-then-ReLU-in-place maps


def test_compiles_without_graph_breaks():
    block = SKAttention(32, kernels=(3, 3), dilations=(1, 2), groups=8, reduction=4, L=8)
    compiled = torch.compile(copy.deepcopy(block), fullgraph=True, backend='aot_eager')
    x = torch.randn(2, 32, 9, 11)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = compiled(xa), block(xb)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
