import pytest
import torch
from mmdet.models.backbones import CSPDarknet

from mmdet_sk.models.backbones import PluginCSPDarknet
from mmdet_sk.models.layers import SKAttention

SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=16, reduction=8)


def test_plugins_after_chosen_stages():
    model = PluginCSPDarknet(
        deepen_factor=0.33, widen_factor=0.25,
        plugins=[dict(cfg=SK, stages=(False, True, False, True), position='after_stage')])
    sks = [m for m in model.modules() if isinstance(m, SKAttention)]
    assert [m.in_channels for m in sks] == [64, 256]
    assert isinstance(model.stage2[-1], SKAttention) and isinstance(model.stage4[-1], SKAttention)
    model.init_weights()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256]


def test_plain_checkpoint_keys_unchanged():
    plain = CSPDarknet(deepen_factor=0.33, widen_factor=0.25)
    model = PluginCSPDarknet(deepen_factor=0.33, widen_factor=0.25,
                             plugins=[dict(cfg=SK, position='after_stage')])
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and not missing  # the SK blocks keep their own weights
    sk_names = [n for n, m in model.named_modules() if isinstance(m, SKAttention)]
    assert len(sk_names) == 4
    new = set(model.state_dict()) - set(plain.state_dict())
    assert new and all(any(k.startswith(n + '.') for n in sk_names) for k in new)


def test_sk_keeps_its_own_init_inside_csp_darknet():
    """CSPDarknet's init reaches the SK blocks' branch convs: Kaiming-uniform weights (the
    distribution of PyTorch's default) and biases set to 0. Each block then gives every layer
    PyTorch's default init, whose conv biases are uniform within 1 / sqrt(fan_in), not 0.
    Every SK tensor is set to a marker value first, so each one is seen to be initialised."""
    torch.manual_seed(0)
    model = PluginCSPDarknet(deepen_factor=0.33, widen_factor=0.25,
                             plugins=[dict(cfg=SK, position='after_stage')])
    with torch.no_grad():
        for block in model.plugin_layers:
            for t in block.state_dict(keep_vars=True).values():
                t.fill_(7)
    model.init_weights()
    assert all(m.is_init for m in model.plugin_layers)
    for block in model.plugin_layers:
        for branch in block.convs:
            bound = branch.conv.weight[0].numel()**-0.5
            assert branch.conv.weight.abs().max() <= bound
            assert torch.all(branch.conv.bias != 0) and branch.conv.bias.abs().max() <= bound
            for t, value in ((branch.bn.weight, 1), (branch.bn.bias, 0),
                             (branch.bn.running_mean, 0), (branch.bn.running_var, 1)):
                assert torch.all(t == value)
        for fc in [block.fc, *block.fcs]:
            bound = fc.in_features**-0.5
            assert fc.weight.abs().max() <= bound and fc.bias.abs().max() <= bound


def test_bad_position_and_stages():
    with pytest.raises(ValueError, match="after_conv2.*allowed: after_stage"):
        PluginCSPDarknet(plugins=[dict(cfg=SK, position='after_conv2')])
    with pytest.raises(ValueError, match='one bool per stage'):
        PluginCSPDarknet(plugins=[dict(cfg=SK, stages=(True, ) * 5, position='after_stage')])


def test_sk_norms_train_under_norm_eval():
    model = PluginCSPDarknet(deepen_factor=0.33, widen_factor=0.25, norm_eval=True,
                             frozen_stages=1,
                             plugins=[dict(cfg=SK, stages=(True, True, False, False),
                                           position='after_stage')])
    model.train()
    frozen_sk, sk = model.stage1[-1], model.stage2[-1]
    assert not model.stage2[0].bn.training  # CSPDarknet's own norms: frozen
    assert not frozen_sk.convs[0].bn.training  # a frozen stage's plugin stays frozen
    assert sk.convs[0].bn.training
    before = sk.convs[0].bn.running_var.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(sk.convs[0].bn.running_var, before)
