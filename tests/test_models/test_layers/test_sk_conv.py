"""SKConv: a conv-shaped SK unit for conv slots (mmdet's ResNet ``dcn``/``stage_with_dcn``)."""
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer
from mmdet.models.backbones import ResNet, ResNeXt
from torch import nn

from mmdet_sk.models.backbones import PluginResNet
from mmdet_sk.models.layers import SKConv
from sk_test_utils import assert_records_selection, with_running_stats


def _sk_units(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, SKConv)}


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmpretrain'])
def test_registered_where_build_conv_layer_looks(scope):
    from mmengine.registry import MODELS, DefaultScope
    assert MODELS.get('SKConv') is SKConv
    with DefaultScope.overwrite_default_scope(scope):
        layer = build_conv_layer(dict(type='SKConv'), 8, 8, 3, padding=1)
    assert isinstance(layer, SKConv)


def test_built_by_build_conv_layer_like_a_conv():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=2, dilation=2, groups=4, bias=True)
    sk = build_conv_layer(dict(type='SKConv', gate=True), 16, 32, kernel_size=3, stride=2,
                          padding=2, dilation=2, groups=4, bias=True)
    assert isinstance(sk, SKConv)
    assert sk.weight.shape == conv.weight.shape and sk.bias.shape == conv.bias.shape
    assert sk.dilated_convs[0].dilation == (4, 4) and sk.dilated_convs[0].padding == (4, 4)
    assert sk.d == 32
    sk.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 16, 13, 10)
    for mode in ('train', 'eval'):
        getattr(sk, mode)()
        assert torch.equal(sk(x), conv(x))


@pytest.mark.parametrize('kwargs', [
    dict(), dict(stride=2), dict(padding=0), dict(kernel_size=5, padding=2, branches=3),
    dict(kernel_size=1, padding=0), dict(stride=2, padding=3, dilation=3, groups=8)])
def test_every_branch_has_the_output_size_of_the_conv(kwargs):
    conv_kwargs = {k: v for k, v in kwargs.items() if k != 'branches'}
    conv = nn.Conv2d(16, 24, **dict(dict(kernel_size=3, padding=1), **conv_kwargs))
    sk = SKConv(16, 24, **kwargs).train()
    x = torch.randn(2, 16, 15, 12)
    assert sk(x).shape == conv(x).shape
    assert len(sk.dilated_convs) == sk.branches - 1 and len(sk.norms) == sk.branches


def test_paper_unit_without_gate_is_split_fuse_select():
    torch.manual_seed(0)
    sk = SKConv(32, 32, groups=8, reduction=4, L=8).eval()
    with_running_stats(sk)
    x = torch.randn(2, 32, 9, 9)
    u1 = F.relu(sk.norms[0](sk.conv(x)))
    u2 = F.relu(sk.norms[1](sk.dilated_convs[0](x)))
    z = sk.fc((u1 + u2).mean((2, 3)))
    a = torch.softmax(torch.stack([sk.fcs[0](z), sk.fcs[1](z)]), 0)[..., None, None]
    torch.testing.assert_close(sk(x), a[0] * u1 + a[1] * u2)


def test_branch_layout_and_recorded_selection_for_the_analysis_tools():
    torch.manual_seed(0)
    sk = SKConv(16, 16, dilation=2, padding=2, branches=3, reduction=4, L=8).eval()
    with_running_stats(sk)
    assert sk.kernels == (3, 3, 3) and sk.dilations == (2, 4, 6)
    assert [c.dilation for c in sk.dilated_convs] == [(4, 4), (6, 6)]
    x = torch.randn(2, 16, 9, 9)
    weights, out = assert_records_selection(sk, x)
    # The weights of the forward's own branch outputs.
    maps = [sk.conv(x)] + [conv(x) for conv in sk.dilated_convs]
    feats = [act(norm(y)) for y, norm, act in zip(maps, sk.norms, sk.acts)]
    torch.testing.assert_close(weights, sk._selection_weights(feats))
    assert torch.equal(out, sk(x))  # recording changes nothing


def test_state_dict_keys():
    keys = list(SKConv(16, 16, gate=True).state_dict())
    assert keys[0] == 'weight' and 'bias' not in keys and 'gate' in keys
    assert not [k for k in keys if 'fuse_norm' in k]
    keys = list(SKConv(16, 16, fuse_cfg=dict()).state_dict())
    assert {'fuse_norm.weight', 'fuse_norm.bias'} <= set(keys)


def test_conv_checkpoint_keeps_sk_init_but_partial_sk_keys_are_reported():
    sk = SKConv(16, 16, gate=True)
    before = {k: v.clone() for k, v in sk.state_dict().items()}
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    assert not sk.load_state_dict(conv.state_dict(), strict=True).missing_keys
    assert torch.equal(sk.weight, conv.weight)
    for key, value in sk.state_dict().items():
        if key != 'weight':
            assert torch.equal(value, before[key]), key
    partial = dict(conv.state_dict(), **{'fc.weight': sk.fc.weight.detach().clone()})
    missing = sk.load_state_dict(partial, strict=False).missing_keys
    assert 'fc.bias' in missing and 'weight' not in missing
    with pytest.raises(RuntimeError, match='weight'):
        sk.load_state_dict({}, strict=True)


def test_gated_unit_learns_within_two_steps():
    torch.manual_seed(0)
    sk = SKConv(16, 16, stride=2, groups=4, gate=True, fuse_cfg=dict()).train()
    opt = torch.optim.SGD(sk.parameters(), lr=0.1)
    x = torch.randn(2, 16, 8, 8)
    grads = []
    for _ in range(2):
        opt.zero_grad()
        sk(x).square().mean().backward()
        grads.append({n: p.grad.abs().sum().item() for n, p in sk.named_parameters()})
        opt.step()
    assert grads[0]['gate'] > 0 and grads[0]['weight'] > 0
    assert not [n for n, v in grads[1].items() if not v > 0]


@pytest.mark.parametrize('norm', [
    None, dict(type='LN'), dict(type='GN', num_groups=8), dict(type='BN'), dict(type='BN1d')])
def test_paper_fuse_batch_one_training_step(norm):
    """At batch 1 the pooled descriptor has one value per channel: a BatchNorm Fuse uses its
    running statistics there (as in eval mode), the others have no batch statistics."""
    fuse_cfg = dict() if norm == dict(type='LN') else dict(norm_cfg=norm)
    sk = SKConv(32, 32, groups=4, fuse_cfg=fuse_cfg).train()
    assert sk.fuse_cfg['act_cfg'] == dict(type='ReLU')
    x = torch.randn(1, 32, 6, 6)
    sk(x).square().mean().backward()
    assert all(p.grad is not None for p in sk.parameters())
    # Train and eval mode compute the same Fuse at batch 1.
    sk.norms.eval()
    with torch.no_grad():
        torch.testing.assert_close(sk(x), sk.eval()(x))
    if norm is not None and norm['type'].startswith('BN'):
        mean = sk.fuse_norm.running_mean.clone()
        sk.train()(torch.randn(2, 32, 6, 6)).sum().backward()  # a batch: batch statistics
        assert not torch.equal(sk.fuse_norm.running_mean, mean)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(kernel_size=4), ValueError, ['kernel_size', 'odd']),
    (dict(kernel_size=(3, 3)), TypeError, ['kernel_size', 'int']),
    (dict(stride=0), ValueError, ['stride', '>= 1']),
    (dict(padding=-1), ValueError, ['padding', '>= 0']),
    (dict(groups=5), ValueError, ['groups', 'divisible']),
    (dict(branches=0), ValueError, ['branches', '>= 1']),
    (dict(gate=1), TypeError, ['gate', 'True or False']),
    (dict(fuse_cfg=dict(norm=dict(type='LN'))), ValueError, ['fuse_cfg', 'norm_cfg']),
    (dict(fuse_cfg='LN'), TypeError, ['fuse_cfg']),
    (dict(fuse_cfg=dict(norm_cfg='LN')), TypeError, ['fuse_cfg.norm_cfg', 'type']),
])
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        SKConv(**dict(dict(in_channels=32, out_channels=32), **kwargs))
    for word in words:
        assert word in str(info.value)


def test_export_matches_eager():
    m = SKConv(16, 16, stride=2, groups=4, gate=True, fuse_cfg=dict()).eval()
    with torch.no_grad():
        m.gate.fill_(0.5)
    x = torch.randn(1, 16, 9, 7)
    exported = torch.export.export(m, (x, ))
    torch.testing.assert_close(exported.module()(x), m(x))


def test_non_4d_input_is_rejected():
    with pytest.raises(ValueError, match='4-D input'):
        SKConv(8, 8)(torch.randn(8, 5, 5))


# Trained networks upgraded in place: ResNet/ResNeXt's conv2 replaced by a gated SKConv.
STAGES = (False, True, True, True)
BACKBONES = {
    'resnet50': lambda **kw: ResNet(depth=50, **kw),
    'resnext50': lambda **kw: ResNeXt(depth=50, groups=32, base_width=4, **kw),
    'resnet18': lambda **kw: PluginResNet(depth=18, **kw),
}


@pytest.mark.parametrize('arch, with_cp', [('resnet50', False), ('resnext50', True),
                                           ('resnet18', False)])
def test_trained_backbone_upgrades_to_gated_skconv(arch, with_cp):
    build = BACKBONES[arch]
    torch.manual_seed(0)
    plain = build(with_cp=with_cp)
    plain.init_weights()
    with_running_stats(plain, gates=False)
    sk = build(with_cp=with_cp, dcn=dict(type='SKConv', gate=True, fuse_cfg=dict()),
               stage_with_dcn=STAGES)
    sk.init_weights()
    units = _sk_units(sk)
    blocks = {'resnet50': 13, 'resnext50': 13, 'resnet18': 6}[arch]
    assert len(units) == blocks and all(n.endswith('.conv2') for n in units)
    assert not [n for n in units if n.startswith('layer1.')]
    if arch == 'resnext50':
        assert next(iter(units.values())).groups == 32
    sk.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for mode in ('eval', 'train'):
        outs = []
        for model in (plain, sk):
            getattr(model, mode)()
            with torch.no_grad():
                outs.append(model(x))
        assert outs[0][-1].abs().sum() > 0
        for a, b in zip(*outs):
            assert torch.equal(a, b)

    sk.train()
    params = [p for m in units.values() for n, p in m.named_parameters() if n != 'weight']
    opt = torch.optim.SGD(params, lr=0.1)
    xg = x.clone().requires_grad_(with_cp)  # with_cp checkpoints only inputs needing grad
    grads = []
    for _ in range(2):
        opt.zero_grad()
        sum(out.square().mean() for out in sk(xg)).backward()
        grads.append({f'{u}.{n}': p.grad.abs().sum().item() if p.grad is not None else 0.0
                      for u, m in units.items() for n, p in m.named_parameters()
                      if n != 'weight'})
        opt.step()
    gates = [k for k in grads[0] if k.endswith('.gate')]
    assert len(gates) == blocks and all(grads[0][k] > 0 for k in gates)
    dead = [k for k, v in grads[1].items() if not v > 0]
    assert not dead, f'no gradient at step 2: {dead[:5]}'


def _classifier_complexity(depth, dcn=None):
    """(params, multiply-adds) of ResNeXt-``depth`` 32x4d plus a 2048x1000 linear head.

    Built on the meta device (no memory, no compute). The counter is torch's
    ``FlopCounterMode``, the same for both networks: it counts at the operator level, so the
    functional conv of SKConv's branch 0 counts (thop's module hooks miss it), and it runs on
    meta tensors (MMEngine's trace-based counter does not). It counts the convolutions and the
    linear layers, as the paper's FLOPs (multiply-adds) do; FLOPs / 2 = multiply-adds.
    """
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device('meta'):
        kwargs = dict(dcn=dcn, stage_with_dcn=(True, ) * 4) if dcn else {}
        backbone = ResNeXt(depth=depth, groups=32, base_width=4, out_indices=(3, ), **kwargs)
        head = nn.Linear(2048, 1000)
    params = sum(p.numel() for m in (backbone, head) for p in m.parameters())
    backbone.eval()
    with FlopCounterMode(display=False) as counter:
        head(backbone(torch.empty(1, 3, 224, 224, device='meta'))[-1].mean((2, 3)))
    return params, counter.get_total_flops() // 2


# (depth, paper's params of SKNet, paper's GFLOPs of ResNeXt and of SKNet), Table 2.
SKNETS = [(50, 27.5e6, 4.24, 4.47), (101, 48.9e6, 7.99, 8.46)]


@pytest.mark.parametrize('depth, params, flops_resnext, flops_sknet', SKNETS)
def test_sknet_has_the_papers_size_and_cost(depth, params, flops_resnext, flops_sknet):
    """SKNet-50/101: ResNeXt 32x4d with the paper's SK unit (M=2, G=32, r=16, L=32, Fuse
    fc-norm-ReLU) as conv2 of every Bottleneck, through mmdet's own ``dcn`` slot.

    mmdet's Bottleneck keeps its ``norm2`` and ReLU after the unit, which the paper's unit
    does not have: 2 * C parameters per block (15,104 for SKNet-50, 32,512 for SKNet-101).
    """
    plain_params, plain_macs = _classifier_complexity(depth)
    if depth == 50:
        assert plain_params == 25_028_904  # calibration: mmdet's ResNeXt-50 32x4d + head
    sk = dict(type='SKConv', branches=2, reduction=16, L=32, fuse_cfg=dict())
    sk_params, sk_macs = _classifier_complexity(depth, sk)
    assert abs(sk_params - params) < 0.1e6, sk_params
    ratio, paper_ratio = sk_macs / plain_macs, flops_sknet / flops_resnext
    assert abs(ratio / paper_ratio - 1) < 0.01, (ratio, paper_ratio)


def test_plugin_resnet_norm_eval_keeps_skconv_norms_training():
    model = PluginResNet(depth=18, norm_eval=True, frozen_stages=2,
                         dcn=dict(type='SKConv', gate=True), stage_with_dcn=STAGES)
    model.train()
    units = _sk_units(model)
    assert len(units) == 6
    for name, unit in units.items():
        trained = not name.startswith('layer2.')  # stages 1-2 frozen
        assert all(m.training == trained for m in unit.norms), name
    assert not model.layer3[0].norm2.training  # the pretrained norms stay frozen


def test_plugin_resnext_norm_eval_keeps_skconv_norms_training():
    from mmdet_sk.models.backbones import PluginResNeXt
    model = PluginResNeXt(depth=50, groups=32, base_width=4, norm_eval=True, frozen_stages=1,
                          dcn=dict(type='SKConv', gate=True), stage_with_dcn=STAGES)
    model.train()
    units = _sk_units(model)
    assert len(units) == 13 and next(iter(units.values())).groups == 32
    assert all(m.training for unit in units.values() for m in unit.norms)
    assert not model.layer3[0].norm2.training


def test_batch1_one_value_per_channel_trains():
    """Batch 1 on a map that the stride makes 1x1: the branch BNs use their running stats."""
    unit = SKConv(32, 32, 3, stride=2, padding=1, groups=8, gate=True)
    unit.train()
    before = [n.running_mean.clone() for n in unit.norms]
    out = unit(torch.rand(1, 32, 2, 2, requires_grad=True))
    assert out.shape == (1, 32, 1, 1)
    out.sum().backward()
    assert all(torch.equal(b, n.running_mean) for b, n in zip(before, unit.norms))
    assert unit.gate.grad is not None


def test_split_input_gives_each_branch_its_slice():
    """timm's SK-ResNet unit: branch i convolves its own in_channels / branches inputs."""
    torch.manual_seed(0)
    sk = with_running_stats(SKConv(16, 24, stride=2, split_input=True, reduction=4, L=8))
    assert sk.weight.shape == (24, 8, 3, 3) and sk.dilated_convs[0].in_channels == 8
    x = torch.randn(2, 16, 9, 9)
    u1 = F.relu(sk.norms[0](sk.conv(x[:, :8])))
    u2 = F.relu(sk.norms[1](sk.dilated_convs[0](x[:, 8:])))
    z = sk.fc((u1 + u2).mean((2, 3)))
    a = torch.softmax(torch.stack([sk.fcs[0](z), sk.fcs[1](z)]), 0)[..., None, None]
    torch.testing.assert_close(sk(x), a[0] * u1 + a[1] * u2)
    assert 'split_input=True' in repr(sk)


def test_timm_unit_form_has_no_fc_biases_and_a_bn_fuse():
    sk = SKConv(32, 32, groups=4, fuse_cfg=dict(norm_cfg=dict(type='BN')), fc_bias=False)
    keys = set(sk.state_dict())
    assert 'fc.weight' in keys and not {'fc.bias', 'fcs.0.bias', 'fcs.1.bias'} & keys
    assert isinstance(sk.fuse_norm, nn.BatchNorm2d)


def test_bn_fuse_trains_at_batch_one_with_running_stats():
    """The pooled descriptor has one value per channel at batch 1 (any image size)."""
    torch.manual_seed(0)
    sk = with_running_stats(SKConv(16, 16, reduction=4, L=8, fc_bias=False,
                                   fuse_cfg=dict(norm_cfg=dict(type='BN'))))
    x = torch.randn(1, 16, 6, 6)
    sk.train()
    sk.fuse_norm.eval()
    with torch.no_grad():
        expected = sk(x)
    sk.fuse_norm.train()
    mean = sk.fuse_norm.running_mean.clone()
    out = sk(x)
    torch.testing.assert_close(out, expected)
    assert torch.equal(sk.fuse_norm.running_mean, mean)
    out.sum().backward()
    assert sk.fuse_norm.weight.grad is not None


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(split_input=True, gate=True), ValueError, ['gate', 'split_input']),
    (dict(split_input=True, branches=3), ValueError, ['in_channels', '16', 'branches', '3']),
    (dict(split_input=True, groups=16), ValueError, ['8', 'groups']),
    (dict(split_input=1), TypeError, ['split_input']),
    (dict(fc_bias='no'), TypeError, ['fc_bias']),
])
def test_bad_split_and_bias_options_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        SKConv(16, 16, **kwargs)
    for word in words:
        assert word in str(info.value)
