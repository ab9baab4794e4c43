import pytest
import torch
from mmdet.models.backbones import ResNeXt
from mmdet.registry import MODELS

from mmdet_sk.models.backbones import PluginResNeXt, PluginResNeXtBottleneck
from mmdet_sk.models.layers import SKAttention
from sk_test_utils import with_running_stats

SK = dict(type='SKAttention', groups=32, kernels=(3, 3), dilations=(1, 2), gate=True)
NARROW = dict(depth=50, groups=32, base_width=4, base_channels=16)
TRAINED = (False, True, True, True)


@pytest.fixture
def sk_built(monkeypatch):
    """The in_channels of every SKAttention constructed while the fixture is active."""
    built = []
    init = SKAttention.__init__

    def counting_init(self, in_channels, *args, **kwargs):
        built.append(in_channels)
        init(self, in_channels, *args, **kwargs)

    monkeypatch.setattr(SKAttention, '__init__', counting_init)
    return built


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, PluginResNeXtBottleneck)]


def test_narrow_resnext_builds_sk_once_with_the_grouped_width(sk_built):
    plugins = [dict(cfg=SK, position='after_conv2')]  # every stage
    with pytest.raises(ValueError, match=r'in_channels` \(16\)'):
        ResNeXt(**NARROW, plugins=plugins)  # mmdet's: built first for stage 1's 16 planes
    sk_built.clear()
    model = MODELS.build(dict(type='PluginResNeXt', **NARROW, plugins=plugins))
    sks = [m for m in model.modules() if isinstance(m, SKAttention)]
    assert len(sks) == 3 + 4 + 6 + 3 and len(sk_built) == len(sks)  # each built once
    for block in _blocks(model):
        assert block.conv2.groups == 32 and block.sk.in_channels == block.conv2.out_channels
    assert [getattr(model, f'layer{i}')[0].sk.in_channels for i in (1, 2, 3, 4)] == [
        128, 256, 512, 1024]
    model.init_weights()
    model.train()
    outs = model(torch.randn(1, 3, 32, 32))  # mmdet's ResNeXt test input, trained
    assert [o.shape[1:] for o in outs] == [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    sum(o.mean() for o in outs).backward()
    assert all(sk.gate.grad is not None for sk in sks)


def test_standard_resnext_builds_each_sk_once(sk_built):
    ResNeXt(depth=50, groups=32, base_width=4,
            plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv2')])
    twice = len(sk_built)
    sk_built.clear()
    PluginResNeXt(depth=50, groups=32, base_width=4,
                  plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv2')])
    assert len(sk_built) == 13 and twice == 26
    assert sk_built[:4] == [256] * 4  # ResNeXt-50 32x4d's stage-2 width


@pytest.mark.parametrize('position, channels', [('after_conv1', 128), ('after_conv3', 64)])
def test_every_position_gets_its_channels(position, channels):
    model = PluginResNeXt(**NARROW, plugins=[dict(cfg=SK, stages=(True, False, False, False),
                                                  position=position)])
    assert model.layer1[0].sk.in_channels == channels
    assert getattr(model.layer1[0], f'{position}_plugin_names') == ['sk']


def test_error_names_the_channels_sk_gets():
    with pytest.raises(ValueError) as info:
        PluginResNeXt(**NARROW, plugins=[dict(cfg=dict(SK, groups=48), stages=TRAINED,
                                              position='after_conv2')])
    assert '`in_channels` (256)' in str(info.value) and '`groups` (48)' in str(info.value)
    with pytest.raises(ValueError, match="after_conv4.*allowed: after_conv1, after_conv2"):
        PluginResNeXt(**NARROW, plugins=[dict(cfg=SK, position='after_conv4')])
    with pytest.raises(KeyError):
        PluginResNeXt(depth=18)  # as mmdet's ResNeXt: Bottleneck depths only


def test_plain_resnext_checkpoint_loads_by_the_same_keys():
    """Same keys, and the same outputs with trained-like norms (a fresh eval-mode BatchNorm is
    nearly the identity, under which a block that skipped or swapped a norm would match)."""
    torch.manual_seed(0)
    plain = ResNeXt(depth=50, groups=32, base_width=4)
    with_running_stats(plain)  # in eval mode (mmdet's ResNeXt.train() returns None)
    ours = PluginResNeXt(depth=50, groups=32, base_width=4)
    assert list(ours.state_dict()) == list(plain.state_dict())
    ours.load_state_dict(plain.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(ours(x), plain(x)):
        torch.testing.assert_close(a, b)

    with_sk = PluginResNeXt(depth=50, groups=32, base_width=4,
                            plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv2')])
    missing, unexpected = with_sk.load_state_dict(plain.state_dict(), strict=False)
    assert not missing and not unexpected  # SK keeps its own weights (its pre-hook)
    new = set(with_sk.state_dict()) - set(plain.state_dict())
    assert new and all('.sk.' in k for k in new)


def test_sk_norms_train_under_norm_eval():
    model = PluginResNeXt(**NARROW, norm_eval=True, frozen_stages=1,
                          plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv2')])
    model.train()
    assert not model.layer2[0].norm2.training
    assert model.layer2[0].sk.training and model.layer2[0].sk.convs[0].bn.training
