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
