import pytest
import thop
import torch
from torch import nn

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.models.layers._reference_sk import ReferenceSKAttention as RefSK
from sk_test_utils import assert_records_selection, with_running_stats


def _pair(channels=64, **kwargs):
    torch.manual_seed(0)
    ref = RefSK(channels, **kwargs)
    ours = SKAttention(
        channels,
        kernels=kwargs.get('kernels', (1, 3, 5, 7)),
        reduction=kwargs.get('reduction', 16),
        groups=kwargs.get('group', 1),
        L=kwargs.get('L', 32))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_state_dict_keys_match_the_reference():
    ref, ours = _pair()
    assert list(ref.state_dict()) == list(ours.state_dict())


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('kwargs', [{}, dict(kernels=(3, 5), group=8, reduction=4, L=8)])
def test_same_outputs_and_gradients_as_the_reference(mode, kwargs):
    ref, ours = _pair(**kwargs)
    if mode == 'eval':
        # Give the running statistics something to carry first.
        for m in (ref, ours):
            m.train()
            m(torch.randn(2, 64, 9, 9, generator=torch.Generator().manual_seed(1)))
    getattr(ref, mode)()
    getattr(ours, mode)()
    x = torch.randn(2, 64, 11, 13, generator=torch.Generator().manual_seed(2))
    xs, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yo = ref(xs), ours(xo)
    assert yo.shape == x.shape
    torch.testing.assert_close(yo, ys, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ys)
    ys.backward(g)
    yo.backward(g)
    torch.testing.assert_close(xo.grad, xs.grad, rtol=1e-4, atol=1e-5)
    grads_ref = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[name].grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f'{name}: {m}')
    for name, buf in ours.named_buffers():
        torch.testing.assert_close(buf, dict(ref.named_buffers())[name])


def test_reference_parameter_count_and_flops():
    model = SKAttention(in_channels=512, reduction=8)
    assert model.d == 64
    assert sum(p.numel() for p in model.parameters()) == 22_192_192
    # The reference's table: thop.profile (ultralytics-thop) on a (1, 512, 7, 7) input, both
    # modules. thop reports multiply-adds (BatchNorm: 4 operations per element) as "FLOPs".
    x = torch.randn(1, 512, 7, 7)
    for m in (model, RefSK(512, reduction=8)):
        keys = list(m.state_dict())
        macs, params = thop.profile(m.train(), inputs=(x, ), verbose=False)
        assert (macs, params) == (1_079_555_584, 22_192_192)
        assert m.training and list(m.state_dict()) == keys  # thop leaves the module as it was


def test_dilated_paper_preset_shapes():
    m = SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32, reduction=16, L=32)
    assert m.convs[1].conv.dilation == (2, 2) and m.convs[1].conv.padding == (2, 2)
    assert m.d == 32
    for shape in [(1, 64, 1, 1), (2, 64, 7, 5), (1, 64, 2, 3), (3, 64, 16, 16)]:
        m.eval()
        assert m(torch.randn(shape)).shape == shape
        m.train()
        if shape[0] * shape[2] * shape[3] > 1:  # BN needs more than one value in training
            assert m(torch.randn(shape)).shape == shape


def test_selection_weights_are_a_softmax_over_branches():
    m = SKAttention(32, kernels=(1, 3, 5)).eval()
    feats, w = m.branch_weights(torch.randn(2, 32, 8, 8))
    assert len(feats) == 3 and w.shape == (3, 2, 32)
    torch.testing.assert_close(w.sum(0), torch.ones(2, 32))
    assert (w > 0).all()


def test_recorded_selection_is_that_of_the_forward():
    m = SKAttention(32, kernels=(1, 3, 5)).eval()
    x = torch.randn(2, 32, 8, 8)
    weights, out = assert_records_selection(m, x)
    torch.testing.assert_close(weights, m.branch_weights(x)[1])
    assert torch.equal(out, m(x))


def test_gradients_reach_every_parameter():
    m = SKAttention(32, kernels=(3, 5), groups=4, reduction=4, L=4)
    m.init_weights()
    m(torch.randn(2, 32, 6, 6)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_norm_and_act_configs_keep_layout():
    m = SKAttention(32, kernels=(3, ), norm_cfg=dict(type='GN', num_groups=4),
                    act_cfg=dict(type='SiLU'))
    assert isinstance(m.convs[0].gn, nn.GroupNorm)
    assert isinstance(m.convs[0].relu, nn.SiLU)
    assert m(torch.randn(1, 32, 5, 5)).shape == (1, 32, 5, 5)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(kernels=(3, 4)), ValueError, ['kernels', 'odd']),
    (dict(kernels=(0, )), ValueError, ['kernels', 'odd']),
    (dict(kernels=()), ValueError, ['kernels', 'empty']),
    (dict(kernels='35'), TypeError, ['kernels']),
    (dict(kernels=(3.0, )), TypeError, ['kernels']),
    (dict(groups=5), ValueError, ['in_channels', 'groups', 'divisible']),
    (dict(reduction=0), ValueError, ['reduction', '>= 1']),
    (dict(L=0), ValueError, ['`L`', '>= 1']),
    (dict(kernels=(3, 5), dilations=(1, 2, 3)), ValueError, ['dilations', 'one entry']),
    (dict(dilations=0), ValueError, ['dilations', 'positive']),
    (dict(in_channels=0), ValueError, ['in_channels', '>= 1']),
    (dict(in_channels=32.0), TypeError, ['in_channels', 'int']),
])
def test_bad_arguments_are_named(kwargs, error, words):
    kwargs = dict(dict(in_channels=32), **kwargs)
    with pytest.raises(error) as info:
        SKAttention(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_non_4d_input_is_rejected():
    with pytest.raises(ValueError, match='4-D input'):
        SKAttention(8, kernels=(3, ))(torch.randn(8, 5, 5))


def test_trace_and_export_match_eager():
    m = SKAttention(16, kernels=(3, 5), groups=4, reduction=4, L=4).eval()
    x = torch.randn(1, 16, 9, 7)
    traced = torch.jit.trace(m, x)
    torch.testing.assert_close(traced(x), m(x))
    y = torch.randn(2, 16, 9, 7)
    torch.testing.assert_close(traced(y), m(y))
    exported = torch.export.export(m, (x, ))
    torch.testing.assert_close(exported.module()(x), m(x))


def test_own_init_survives_parent_kaiming():
    """A parent that Kaiming-initialises every Conv2d must not decide SK's init."""
    from mmengine.model import BaseModule

    class Parent(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Kaiming', layer='Conv2d', mode='fan_out'))
            self.sk = SKAttention(256, kernels=(3, ))

    torch.manual_seed(0)
    parent = Parent()
    parent.init_weights()
    w = parent.sk.convs[0].conv.weight
    # PyTorch's default conv init is uniform within 1/sqrt(fan_in); Kaiming-normal fan_out
    # (std sqrt(2 / (256 * 9)) = 0.0295) exceeds that bound (0.0208) for a third of weights.
    bound = 1 / (256 * 9)**0.5
    assert w.abs().max() <= bound
    assert parent.sk.is_init


def test_init_cfg_is_honoured():
    m = SKAttention(16, kernels=(3, ), init_cfg=dict(type='Constant', val=0.5, layer='Linear'))
    m.init_weights()
    assert torch.all(m.fc.weight == 0.5) and torch.all(m.fcs[0].weight == 0.5)


def test_default_fuse_is_the_reference_linear_fuse():
    m = SKAttention(64)
    assert m.fuse_cfg is None and m.fuse_norm is None and m.fuse_act is None
    assert not [k for k in m.state_dict() if k.startswith('fuse_')]


@pytest.mark.parametrize('fuse_cfg, norm_type', [
    (dict(), nn.LayerNorm), (dict(norm_cfg=dict(type='GN', num_groups=8)), nn.GroupNorm),
    (dict(norm_cfg=None), None), (dict(norm_cfg=dict(type='BN')), nn.BatchNorm2d)])
def test_paper_fuse_is_fc_norm_relu(fuse_cfg, norm_type):
    torch.manual_seed(0)
    m = SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32, fuse_cfg=fuse_cfg)
    assert isinstance(m.fuse_act, nn.ReLU)
    keys = [k for k in m.state_dict() if k.startswith('fuse_norm.')]
    if norm_type is None:
        assert m.fuse_norm is None and not keys
    else:
        assert isinstance(m.fuse_norm, norm_type) and 'fuse_norm.weight' in keys
    m.eval()
    x = torch.randn(2, 64, 7, 7)
    feats, w = m.branch_weights(x)
    z = m.fc(sum(f.mean((2, 3)) for f in feats))
    if norm_type is nn.LayerNorm:
        z = m.fuse_norm(z)
    elif norm_type is not None:
        z = m.fuse_norm(z[:, :, None, None]).flatten(1)
    z = z.relu()
    torch.testing.assert_close(w, torch.stack([fc(z) for fc in m.fcs]).softmax(0))


@pytest.mark.parametrize('norm_cfg', [None, dict(type='LN'), dict(type='GN', num_groups=8)])
def test_paper_fuse_trains_at_batch_one(norm_cfg):
    """No batch statistics in the Fuse: a batch-1 training step works (the branch BNs see
    the H x W values of the one image), and the Fuse computes the same in train and eval."""
    m = SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32,
                    fuse_cfg=dict(norm_cfg=norm_cfg), gate=True).train()
    x = torch.randn(1, 64, 6, 6)
    m(x).square().mean().backward()
    assert all(p.grad is not None for p in m.parameters())
    with torch.no_grad():
        m.convs.eval()
        w_train = m.branch_weights(x)[1]
        torch.testing.assert_close(w_train, m.eval().branch_weights(x)[1])


def test_paper_fuse_with_bn_uses_running_stats_at_batch_one():
    """The pooled descriptor has one value per channel at batch 1: the Fuse's training BN
    normalises with its running statistics there (as in eval mode, without updating them),
    and with the batch's statistics at batch > 1."""
    torch.manual_seed(0)
    m = with_running_stats(SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32,
                                       fuse_cfg=dict(norm_cfg=dict(type='BN'))))
    x = torch.randn(1, 64, 6, 6)
    m.convs.train()  # the branch norms see 36 values per channel: batch statistics
    with torch.no_grad():
        expected = m(x)  # the Fuse's BN in eval mode
    m.train()
    mean = m.fuse_norm.running_mean.clone()
    out = m(x)
    torch.testing.assert_close(out, expected)
    assert torch.equal(m.fuse_norm.running_mean, mean) and m.fuse_norm.training
    out.sum().backward()
    assert m.fuse_norm.weight.grad is not None
    m(torch.randn(2, 64, 6, 6)).sum().backward()
    assert not torch.equal(m.fuse_norm.running_mean, mean)


def test_default_checkpoint_into_paper_fuse_reports_the_norm_missing():
    default = SKAttention(64)
    m = SKAttention(64, fuse_cfg=dict())
    result = m.load_state_dict(default.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ['fuse_norm.bias', 'fuse_norm.weight']


@pytest.mark.parametrize('fuse_cfg, error, words', [
    ('LN', TypeError, ['fuse_cfg']),
    (dict(norm=dict(type='LN')), ValueError, ['fuse_cfg', 'norm_cfg', 'act_cfg']),
    (dict(act_cfg='ReLU'), TypeError, ['fuse_cfg.act_cfg']),
])
def test_bad_fuse_cfg_is_named(fuse_cfg, error, words):
    with pytest.raises(error) as info:
        SKAttention(32, fuse_cfg=fuse_cfg)
    for word in words:
        assert word in str(info.value)
