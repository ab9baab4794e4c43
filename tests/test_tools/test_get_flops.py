"""tools/analysis_tools/get_flops.py: MMEngine's counter on a config, SK or not."""
import importlib.util
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmdet_sk.models.layers import SKAttention

SK_CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
PLAIN_CONFIG = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'


@pytest.fixture(scope='module')
def tool(repo_root):
    spec = importlib.util.spec_from_file_location(
        'get_flops', f'{repo_root}/tools/analysis_tools/get_flops.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _built(cfg):
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def test_params_match_the_built_model(tool, repo_root):
    sk_cfg = Config.fromfile(f'{repo_root}/{SK_CONFIG}')
    plain_cfg = Config.fromfile(f'{repo_root}/{PLAIN_CONFIG}')
    sk = tool.model_complexity(sk_cfg, (96, 100))
    plain = tool.model_complexity(plain_cfg, (96, 100))
    assert sk['input_shape'] == (1, 3, 96, 128)  # padded to pad_size_divisor=32
    sk_model, plain_model = _built(sk_cfg), _built(plain_cfg)
    assert sk['params'] == sum(p.numel() for p in sk_model.parameters())
    assert plain['params'] == sum(p.numel() for p in plain_model.parameters())
    sk_params = sum(p.numel() for m in sk_model.modules() if isinstance(m, SKAttention)
                    for p in m.parameters())
    assert sk['params'] - plain['params'] == sk_params > 0
    assert sk['flops'] > 0 and plain['flops'] > 0
    assert tool.default_shape(sk_cfg) == (192, 192)


def test_cli(repo_root):
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/get_flops.py', SK_CONFIG, '--shape', '64', '64'],
        cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Input shape: (1, 3, 64, 64)' in proc.stdout
    # 14,381,993 of the SK blocks' convs, fcs and norms, plus 2,304 gates (one per channel of
    # the 10 gated blocks: 2 x 128 + 2 x 256 + 2 x 512 in c3-c5, 4 x 128 on P3-P6).
    assert 'Params: 14.384M (14384297)' in proc.stdout
    assert 'FLOPs: ' in proc.stdout
