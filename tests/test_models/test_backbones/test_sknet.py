"""SKNet: timm's SKNets in MMDetection's ResNet, their weights loaded whole, timm's outputs.

``tests/data/timm_sknet_reference.pth`` holds small SK-ResNeXt (depth-50 layout) and SK-ResNet
(depth-18 layout) networks built from timm's own blocks, with trained-like BatchNorms, and
timm's stage outputs in eval and train mode (``make timm-reference`` regenerates it with timm,
in the compat stack). The full published SKNets are compared with timm itself in
``test_sknet_timm.py``, where timm can be imported.
"""
import os.path as osp

import pytest
import torch
from mmdet.models.backbones import ResNet, ResNeXt
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import convert_timm_sknet
from mmdet_sk.models.layers import SKConv
from sk_test_utils import with_running_stats

REFERENCE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'data',
                     'timm_sknet_reference.pth')
TINY = ('sk_resnext_tiny', 'sk_resnet_tiny')


@pytest.fixture(scope='module')
def reference():
    return torch.load(REFERENCE, map_location='cpu', weights_only=True)


def assert_close_to_scale(outs, expected, tol=1e-5):
    """Each output equals the expected one to ``tol`` of the expected one's largest value."""
    assert len(outs) == len(expected)
    for i, (out, exp) in enumerate(zip(outs, expected)):
        assert out.shape == exp.shape, f'stage {i + 1}'
        err = (out - exp).abs().max().item()
        assert err <= tol * exp.abs().max().item(), f'stage {i + 1}: {err}'


def _tiny(reference, name, **kwargs):
    ref = reference['models'][name]
    model = SKNet(**ref['sknet'], out_indices=(0, 1, 2, 3), **kwargs)
    state_dict, _, left = convert_timm_sknet(ref['state_dict'])
    assert left == ['fc.weight', 'fc.bias']
    model.load_state_dict(state_dict, strict=True)  # whole: no missing, no unexpected key
    return model, ref


@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_converted_timm_weights_compute_timms_stage_outputs(reference, name, mode):
    """Eval: running statistics; train: batch statistics (``norm_eval=False``, as the SyncBN
    configs of ResNeSt train), the SK units' BatchNorms and their Fuse's BN included. In
    float64, where train-mode BatchNorms do not magnify rounding (see the reference script):
    the same network to 1e-9 of each stage's scale."""
    model, ref = _tiny(reference, name, norm_eval=False)
    model.double()
    getattr(model, mode)()
    with torch.no_grad():
        outs = model(ref['input'].double())
    assert_close_to_scale(outs, ref[mode], tol=1e-9)


@pytest.mark.parametrize('name', TINY)
def test_float32_eval_outputs_equal_timms(reference, name):
    model, ref = _tiny(reference, name)
    model.eval()
    with torch.no_grad():
        assert_close_to_scale(model(ref['input']), ref['eval_fp32'], tol=1e-5)


@pytest.mark.parametrize('name', TINY)
def test_loads_through_init_cfg_pretrained(reference, name, tmp_path):
    """``init_cfg=dict(type='Pretrained')`` loads last: the SK units' own default init (run
    by ``init_weights`` for their children first) does not overwrite the checkpoint."""
    ref = reference['models'][name]
    state_dict, _, _ = convert_timm_sknet(ref['state_dict'])
    path = str(tmp_path / 'sknet.pth')
    torch.save({'state_dict': state_dict}, path)
    model = SKNet(**ref['sknet'], init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outs = model(ref['input'])
    assert_close_to_scale(outs, ref['eval_fp32'])


def test_published_forms():
    """SKNet-50 is ResNeXt-50 32x4d with SK units: the paper's 27.5M with the classifier."""
    model = SKNet(depth=50)
    units = [m for m in model.modules() if isinstance(m, SKConv)]
    assert len(units) == 3 + 4 + 6 + 3 and units[0].groups == 32 and units[0].d == 32
    assert [u.d for u in units[-3:]] == [64] * 3  # 1024 / 16
    assert all(not u.split_input and u.fuse_norm is not None and u.fc.bias is None
               for u in units)
    params = sum(p.numel() for p in model.parameters())
    assert round((params + 2048 * 1000 + 1000) / 1e6, 1) == 27.5
    basic = SKNet(depth=18)
    units = [m for m in basic.modules() if isinstance(m, SKConv)]
    assert len(units) == 8 and all(u.split_input for u in units)
    assert [u.d for u in units[::2]] == [16, 16, 32, 64]  # max(16, planes / 8)
    assert isinstance(MODELS.build(dict(type='SKNet', depth=34)), SKNet)
    assert len(SKNet(depth=101).layer3) == 23


@pytest.mark.parametrize('depth', [18, 50])
def test_out_indices_and_shapes(depth):
    model = SKNet(depth=depth, out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    width = 1 if depth == 18 else 4
    assert [tuple(o.shape) for o in outs] == [(1, 128 * width, 8, 8), (1, 512 * width, 2, 2)]


@pytest.mark.parametrize('depth', [18, 50])
def test_batch_one_on_32x32_trains(depth):
    """mmdet's backbone test: one 32x32 image, the last stage 1x1, in training (norm_eval)."""
    model = SKNet(depth=depth)
    model.init_weights()
    model.train()
    outs = model(torch.randn(1, 3, 32, 32))
    assert outs[-1].shape[-2:] == (1, 1)
    outs[-1].sum().backward()


def _running_means(model):
    """The running mean of every BatchNorm of ``model``, by module name."""
    return {name: m.running_mean.clone() for name, m in model.named_modules()
            if isinstance(m, _BatchNorm)}


@pytest.mark.parametrize('depth', [18, 50])
def test_batch_one_trains_batch_statistics_where_the_plain_network_does(depth):
    """With ``norm_eval=False`` every SK unit's Fuse BN sees one value per channel at batch 1
    (the descriptor is pooled over the image): it normalises with its running statistics for
    that step, as the branch norms do on a 1x1 map. On a 64x64 image every other norm trains
    with batch statistics, as every norm of the plain network of the same depth does
    (ResNet-18 for SKNet-18, ResNeXt-50 32x4d for SKNet-50)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    plain = (ResNet(depth=18, norm_eval=False) if depth == 18 else
             ResNeXt(depth=50, groups=32, base_width=4, norm_eval=False))
    with_running_stats(plain)
    plain.train()  # mmdet's ResNet.train() returns None
    before = _running_means(plain)
    plain(x)[-1].sum().backward()
    assert all(not torch.equal(m, before[n]) for n, m in _running_means(plain).items())

    model = with_running_stats(SKNet(depth=depth, norm_eval=False)).train()
    units = [m for m in model.modules() if isinstance(m, SKConv)]
    fuse = {id(u.fuse_norm) for u in units}
    norms = {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    before = _running_means(model)
    model(x)[-1].sum().backward()
    for name, norm in norms.items():
        updated = not torch.equal(norm.running_mean, before[name])
        assert updated == (id(norm) not in fuse), name  # Fuse BNs: one value, not updated
    assert all(u.fuse_norm.weight.grad.abs().sum() > 0 for u in units)


def test_frozen_stages_freeze_the_sk_units_with_their_stage():
    model = SKNet(depth=50, frozen_stages=1, norm_eval=False)
    model.train()
    for stage, frozen in ((model.layer1, True), (model.layer2, False)):
        units = [m for m in stage.modules() if isinstance(m, SKConv)]
        for unit in units:
            assert all(p.requires_grad != frozen for p in unit.parameters())
            assert all(n.training != frozen for n in unit.modules() if isinstance(n, _BatchNorm))
    assert not model.conv1.weight.requires_grad and not model.norm1.training


def test_norm_eval_freezes_the_sk_norms_as_trained_weights():
    """Pretrained SK norms are frozen with every other BN (unlike the random SK plugins of
    PluginResNet, whose norms train)."""
    model = SKNet(depth=18, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    sk_norms = [n for m in model.modules() if isinstance(m, SKConv)
                for n in m.modules() if isinstance(n, _BatchNorm)]
    assert len(sk_norms) == 8 * 3 and all(not n.training for n in norms)
    assert model.training and model.layer1[0].conv1.training


@pytest.mark.parametrize('depth', [18, 50])
def test_with_cp_computes_the_same_outputs_and_gradients(depth):
    torch.manual_seed(0)
    plain = with_running_stats(SKNet(depth=depth, base_channels=16, stem_channels=16,
                                     groups=None if depth == 18 else 4))
    cp_model = SKNet(depth=depth, base_channels=16, stem_channels=16, with_cp=True,
                     groups=None if depth == 18 else 4)
    cp_model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 48, 48)
    grads = []
    for model in (plain, cp_model):
        model.train()
        xi = x.clone().requires_grad_()
        outs = model(xi)
        sum(o.square().mean() for o in outs).backward()
        grads.append((outs, xi.grad, model.layer2[0].conv1.weight.grad))
    for a, b in zip(grads[0][0], grads[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grads[0][1], grads[1][1])
    torch.testing.assert_close(grads[0][2], grads[1][2])


def test_resnext_widths():
    """Narrow ResNeXt widths (mmdet's backbone tests use such): groups x base_width at any
    base_channels, the SK unit taking the grouped width."""
    model = SKNet(depth=50, groups=8, base_width=4, base_channels=16).eval()
    unit = model.layer1[0].conv2
    assert isinstance(unit, SKConv) and unit.in_channels == 32 and unit.groups == 8
    assert not hasattr(model.layer1[0], 'bn2')
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [64, 128, 256, 512]


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(depth=152), ValueError, ['depth', '18, 34, 50, 101', '152']),
    (dict(depth=18, groups=32), ValueError, ['groups', 'depth', '50 or 101']),
    (dict(depth=50, sk_cfg=dict(kernels=(3, 5))), ValueError, ['sk_cfg', 'kernels',
                                                                'reduction']),
    (dict(depth=50, sk_cfg='r16'), TypeError, ['sk_cfg']),
    (dict(depth=50, dcn=dict(type='DCNv2'), stage_with_dcn=(False, True, True, True)),
     ValueError, ['dcn', 'SK unit']),
    (dict(depth=18, plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 4),
                                  position='after_conv1')]), ValueError, ['plugins', '50']),
])
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        SKNet(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_plugins_go_on_the_grouped_width():
    """As in mmdet's ResNeXt: plugins after conv2 act on the SK unit's width."""
    model = SKNet(depth=50, plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
                                          position='after_conv2',
                                          stages=(False, False, False, True))]).eval()
    block = model.layer4[0]
    assert getattr(block, block.after_conv2_plugin_names[0]).in_channels == 1024
    assert model(torch.randn(1, 3, 64, 64))[-1].shape[1] == 2048


def test_fresh_weights_initialise_every_layer():
    """No checkpoint: ResNet's init (Kaiming-normal, fan_out, on every ``Conv2d``) for the
    ResNet layers, PyTorch's default for every layer of the SK units, whose dilated branches
    are ``Conv2d`` layers that ResNet's init reaches first. Every SK tensor is set to a marker
    value first, so each one is seen to be initialised."""
    torch.manual_seed(0)
    model = SKNet(depth=18)
    units = [m for m in model.modules() if isinstance(m, SKConv)]
    with torch.no_grad():
        for unit in units:
            for t in unit.state_dict(keep_vars=True).values():
                t.fill_(7)
    model.init_weights()
    for unit in units:
        # PyTorch's default conv and linear init: uniform within 1 / sqrt(fan_in).
        for w in [unit.weight] + [c.weight for c in unit.dilated_convs]:
            assert w.abs().max() <= w[0].numel()**-0.5
        for fc in [unit.fc, *unit.fcs]:
            assert fc.weight.abs().max() <= fc.in_features**-0.5 and fc.bias is None
        for norm in [*unit.norms, unit.fuse_norm]:
            assert isinstance(norm, nn.BatchNorm2d) and norm.num_batches_tracked == 0
            for t, value in ((norm.weight, 1), (norm.bias, 0), (norm.running_mean, 0),
                             (norm.running_var, 1)):
                assert torch.all(t == value)
    # ResNet's own convs keep its init: Kaiming-normal with std sqrt(2 / fan_out), which
    # exceeds PyTorch's default bound (1 / sqrt(fan_in)) for about half of the weights here.
    w = model.layer1[0].conv2.weight
    torch.testing.assert_close(w.std(), torch.tensor((2 / (64 * 9))**0.5), rtol=0.02, atol=0)
    assert w.abs().max() > w[0].numel()**-0.5
    assert all(torch.isfinite(p).all() for p in model.parameters())
