import torch
from mmcv.cnn import build_plugin_layer
from mmengine.registry import MODELS, DefaultScope

import mmdet_sk  # noqa: F401  (registers SKAttention)
from mmdet_sk.models.layers import SKAttention


def test_registered_in_root_registry():
    assert MODELS.get('SKAttention') is SKAttention


def test_build_plugin_layer_from_mmdet_scope():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        name, layer = build_plugin_layer(
            dict(type='SKAttention', kernels=(3, 5), reduction=8), in_channels=64, postfix=2)
        assert name == 'sk2'
        assert isinstance(layer, SKAttention) and layer.in_channels == 64
        assert isinstance(MMDET_MODELS.build(dict(type='SKAttention', in_channels=32)),
                          SKAttention)
    x = torch.randn(1, 64, 5, 5)
    assert layer(x).shape == x.shape


def test_build_from_another_scope():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        name, layer = build_plugin_layer(dict(type='SKAttention'), in_channels=16)
    assert name == 'sk' and isinstance(layer, SKAttention)
