"""mmdet_sk.utils.complexity: MMEngine's counter on a config, SK or not."""
from mmengine.config import Config

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.utils.complexity import default_shape, model_complexity

SK_CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
PLAIN_CONFIG = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'


def _built(cfg):
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def test_params_match_the_built_model(repo_root):
    sk_cfg = Config.fromfile(f'{repo_root}/{SK_CONFIG}')
    plain_cfg = Config.fromfile(f'{repo_root}/{PLAIN_CONFIG}')
    sk = model_complexity(sk_cfg, (96, 100))
    plain = model_complexity(plain_cfg, (96, 100))
    assert sk['input_shape'] == (1, 3, 96, 128)  # padded to pad_size_divisor=32
    sk_model, plain_model = _built(sk_cfg), _built(plain_cfg)
    assert sk['params'] == sum(p.numel() for p in sk_model.parameters())
    assert plain['params'] == sum(p.numel() for p in plain_model.parameters())
    sk_params = sum(p.numel() for m in sk_model.modules() if isinstance(m, SKAttention)
                    for p in m.parameters())
    assert sk['params'] - plain['params'] == sk_params > 0
    assert sk['flops'] > 0 and plain['flops'] > 0
    assert default_shape(sk_cfg) == (192, 192)
