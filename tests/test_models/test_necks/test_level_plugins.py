import pytest
import torch
from mmdet.registry import MODELS

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.models.necks import LevelPlugins

SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=8, reduction=4)


def test_fpn_then_level_plugins_as_a_neck_list():
    neck = MODELS.build([
        dict(type='FPN', in_channels=[16, 32, 64], out_channels=32, num_outs=4),
        dict(type='LevelPlugins', in_channels=32, num_levels=4, levels=(1, 3), plugin=SK)
    ])
    assert sum(isinstance(m, SKAttention) for m in neck.modules()) == 2
    neck.init_weights()
    feats = [torch.randn(1, c, s, s) for c, s in ((16, 32), (32, 16), (64, 8))]
    outs = neck(feats)
    plain = neck[0](feats)
    assert len(outs) == 4
    torch.testing.assert_close(outs[0], plain[0])  # untouched level
    assert not torch.allclose(outs[1], plain[1])
    assert [o.shape for o in outs] == [p.shape for p in plain]


def test_per_level_channels_and_errors():
    m = LevelPlugins(in_channels=[8, 16], num_levels=2, plugin=SK)
    assert [p.in_channels for p in m.plugins] == [8, 16]
    with pytest.raises(ValueError, match='levels'):
        LevelPlugins(in_channels=8, num_levels=3, levels=(0, 3), plugin=SK)
    with pytest.raises(ValueError, match='in_channels'):
        LevelPlugins(in_channels=[8, 8], num_levels=3, plugin=SK)
    with pytest.raises(KeyError, match='not registered'):
        LevelPlugins(in_channels=8, num_levels=1, plugin=dict(type='Nope'))
    with pytest.raises(ValueError, match='divisible'):
        LevelPlugins(in_channels=12, num_levels=1, plugin=SK)
    with pytest.raises(ValueError, match='num_levels'):
        m((torch.randn(1, 8, 4, 4), ) * 3)


FPN = dict(type='FPN', in_channels=[16, 32, 64], out_channels=32, num_outs=4)


def _feats():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, c, s, s, generator=g) for c, s in ((16, 32), (32, 16), (64, 8))]


def test_plugin_neck_keeps_the_neck_and_its_weight_names():
    plain = MODELS.build(FPN)
    neck = MODELS.build(dict(type='PluginNeck', neck=FPN, levels=(1, 3), plugin=SK))
    assert type(neck) is type(plain)  # still an FPN
    assert [p.in_channels for p in neck.level_plugins.plugins] == [32, 32]
    new = set(neck.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(neck.state_dict())
    assert new and all(k.startswith('level_plugins.plugins.') for k in new)
    # The plain neck's weights load by name, whole (strict: the SK blocks keep theirs).
    neck.init_weights()
    neck.load_state_dict(plain.state_dict(), strict=True)
    outs, ref = neck(_feats()), plain(_feats())
    torch.testing.assert_close(outs[0], ref[0])
    assert not torch.allclose(outs[1], ref[1])  # the bare block changes its level
    torch.testing.assert_close(neck.forward(_feats())[1], ref[1])  # forward skips the hook


def test_plugin_neck_with_gated_sk_is_the_identity_at_init():
    plain = MODELS.build(FPN)
    neck = MODELS.build(
        dict(type='PluginNeck', neck=FPN, plugin=dict(SK, gate=True)))
    neck.init_weights()
    neck.load_state_dict(plain.state_dict())
    for a, b in zip(neck(_feats()), plain(_feats())):
        assert torch.equal(a, b)


def test_plugin_neck_takes_levels_from_the_neck_config_or_refuses():
    pafpn = dict(type='YOLOXPAFPN', in_channels=[16, 32], out_channels=16, num_csp_blocks=1)
    neck = MODELS.build(dict(type='PluginNeck', neck=pafpn, plugin=SK))
    assert neck.level_plugins.num_levels == 2 and neck.level_plugins.in_channels == (16, 16)
    with pytest.raises(ValueError, match=r"`num_levels`=5, but the neck \(type='FPN'\) gives 4 "
                       r'by its `num_outs`'):
        MODELS.build(dict(type='PluginNeck', neck=FPN, num_levels=5, plugin=SK))
    with pytest.raises(ValueError, match=r'`in_channels`=64, but .* gives 32 by its '
                       r'`out_channels`; set in_channels=32'):
        MODELS.build(dict(type='PluginNeck', neck=FPN, in_channels=64, plugin=SK))
    with pytest.raises(ValueError, match=r'set `num_levels`'):
        MODELS.build(dict(type='PluginNeck', neck=dict(type='DilatedEncoder', in_channels=8,
                                                       out_channels=8), plugin=SK))
    with pytest.raises(TypeError, match='`neck` must be a neck config'):
        MODELS.build(dict(type='PluginNeck', neck='FPN', plugin=SK))
