"""The CSP backbones with ``plugins``: YOLOX's CSPDarknet and RTMDet's CSPNeXt, one mixin."""
import pytest
import torch
from mmdet.models.backbones import CSPDarknet, CSPNeXt

from mmdet_sk.models.backbones import PluginCSPDarknet, PluginCSPNeXt
from mmdet_sk.models.layers import SKAttention
from sk_test_utils import with_running_stats

SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=16, reduction=8)
SMALL = dict(deepen_factor=0.33, widen_factor=0.25)
# (plugin backbone, mmdet's backbone)
PAIRS = [(PluginCSPDarknet, CSPDarknet), (PluginCSPNeXt, CSPNeXt)]
IDS = ['CSPDarknet', 'CSPNeXt']
pairs = pytest.mark.parametrize('cls, plain_cls', PAIRS, ids=IDS)


@pairs
def test_plugins_after_chosen_stages(cls, plain_cls):
    model = cls(**SMALL, plugins=[dict(cfg=SK, stages=(False, True, False, True),
                                       position='after_stage')])
    sks = [m for m in model.modules() if isinstance(m, SKAttention)]
    assert [m.in_channels for m in sks] == [64, 256]
    assert isinstance(model.stage2[-1], SKAttention) and isinstance(model.stage4[-1], SKAttention)
    model.init_weights()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256]


@pairs
def test_plain_checkpoint_loads_whole_and_computes_the_same(cls, plain_cls):
    """Trained-like plain weights load by name, with SK's keys the only new ones; with gated SK
    (the identity at insertion) the outputs are the plain backbone's, in eval and train mode."""
    torch.manual_seed(0)
    plain = plain_cls(**SMALL)
    plain.init_weights()
    with_running_stats(plain, gates=False)
    model = cls(**SMALL, plugins=[dict(cfg=dict(SK, gate=True), position='after_stage')])
    model.init_weights()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and not missing  # the SK blocks keep their own weights
    sk_names = [n for n, m in model.named_modules() if isinstance(m, SKAttention)]
    assert len(sk_names) == 4
    new = set(model.state_dict()) - set(plain.state_dict())
    assert new and all(any(k.startswith(n + '.') for n in sk_names) for k in new)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for mode in ('eval', 'train'):
        outs = []
        for m in (plain, model):
            getattr(m, mode)()
            with torch.no_grad():
                outs.append(m(x))
        for a, b in zip(*outs):
            assert a.abs().sum() > 0 and torch.equal(a, b), mode


def test_imagenet_cspnext_loads_whole_through_init_cfg(tmp_path):
    """RTMDet configs start CSPNeXt from an ImageNet classifier's checkpoint (keys
    ``backbone.*`` beside the classifier head's) with ``init_cfg=dict(type='Pretrained',
    prefix='backbone.')``: the SK backbone loads it whole and keeps SK's own initialisation."""
    torch.manual_seed(0)
    plain = CSPNeXt(**SMALL)
    with_running_stats(plain, gates=False)  # (mmdet's CSPNeXt.train returns None, not self)
    state = {f'backbone.{k}': v for k, v in plain.state_dict().items()}
    state['head.fc.weight'] = torch.randn(1000, 256)
    checkpoint = tmp_path / 'cspnext_imagenet.pth'
    torch.save(dict(state_dict=state), checkpoint)
    model = PluginCSPNeXt(**SMALL, plugins=[dict(cfg=dict(SK, gate=True), position='after_stage')],
                          init_cfg=dict(type='Pretrained', prefix='backbone.',
                                        checkpoint=str(checkpoint)))
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k not in plain.state_dict()}
    model.init_weights()
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in fresh.items():  # SK's weights: not touched by the checkpoint
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), model(x)):
            assert a.abs().sum() > 0 and torch.equal(a, b)


@pairs
def test_sk_keeps_its_own_init_inside_the_backbone(cls, plain_cls):
    """The backbone's init reaches the SK blocks' branch convs: Kaiming-uniform weights (the
    distribution of PyTorch's default) and biases set to 0. Each block then gives every layer
    PyTorch's default init, whose conv biases are uniform within 1 / sqrt(fan_in), not 0.
    Every SK tensor is set to a marker value first, so each one is seen to be initialised."""
    torch.manual_seed(0)
    model = cls(**SMALL, plugins=[dict(cfg=SK, position='after_stage')])
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


@pairs
def test_bad_position_and_stages(cls, plain_cls):
    with pytest.raises(ValueError, match=f'{cls.__name__}.*after_conv2.*allowed: after_stage'):
        cls(plugins=[dict(cfg=SK, position='after_conv2')])
    with pytest.raises(ValueError, match='one bool per stage'):
        cls(plugins=[dict(cfg=SK, stages=(True, ) * 5, position='after_stage')])
    # P6 has five stages, and takes five bools
    cls(**SMALL, arch='P6', plugins=[dict(cfg=SK, stages=(False, ) * 4 + (True, ),
                                          position='after_stage')])


@pairs
def test_sk_norms_train_under_norm_eval(cls, plain_cls):
    model = cls(**SMALL, norm_eval=True, frozen_stages=1,
                plugins=[dict(cfg=SK, stages=(True, True, False, False), position='after_stage')])
    model.train()
    frozen_sk, sk = model.stage1[-1], model.stage2[-1]
    assert not model.stage2[0].bn.training  # the backbone's own norms: frozen
    assert not frozen_sk.convs[0].bn.training  # a frozen stage's plugin stays frozen
    assert not any(p.requires_grad for p in frozen_sk.parameters())
    assert sk.convs[0].bn.training and all(p.requires_grad for p in sk.parameters())
    before = sk.convs[0].bn.running_var.clone()
    frozen_before = frozen_sk.convs[0].bn.running_var.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(sk.convs[0].bn.running_var, before)
    assert torch.equal(frozen_sk.convs[0].bn.running_var, frozen_before)
