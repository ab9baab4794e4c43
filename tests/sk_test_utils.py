"""Helpers shared by the tests (``tests/`` is on ``sys.path`` through its conftest)."""
from typing import Tuple, Union

import torch
from mmengine.config import Config
from torch import Tensor, nn

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.utils.benchmark import trained_like_norms


def with_running_stats(model: nn.Module, seed: int = 0, gates: bool = True) -> nn.Module:
    """Make ``model``'s weights trained-like; return it in eval mode.

    Every BatchNorm gets non-trivial statistics and affine parameters (so that folding
    matters, and so that a freshly built ResNet, whose blocks end in a zero BN, is no
    identity by accident). With ``gates``, every SK gate (which starts at 0, the identity)
    gets a value in (0, 1), so that the SK branches count in the outputs.
    """
    trained_like_norms(model, seed)
    if gates:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, SKAttention) and m.gate is not None:
                    m.gate.copy_(torch.rand(m.gate.shape, generator=g))
    return model.eval()


def random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every convolution and linear layer of ``model`` random weights and biases, then
    trained-like norms and open SK gates (:func:`with_running_stats`); return it in eval mode.

    Weights are drawn with variance ``1 / fan_in`` (activations keep their scale through the
    network, as in a trained one), biases with standard deviation 0.01. Unlike a fresh
    initialisation (heads drawn at std 0.01, biases 0), the heads then score boxes apart:
    detections of a random detector have distinct scores well above any threshold. The gates
    of SKConv units are opened too (to values in (0, 1)).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
            elif isinstance(m, SKConv) and m.gate is not None:  # SKAttention's: below
                m.gate.copy_(torch.rand(m.gate.shape, generator=g))
    return with_running_stats(model, seed)


def load_script(*parts: str):
    """A script of the repository (e.g. ``'tools', 'deployment', 'deploy.py'``) as a module,
    loaded from its file: tools are scripts, not a package."""
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), *parts)
    spec = importlib.util.spec_from_file_location(osp.splitext(parts[-1])[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requires_torch(version: str, why: str):
    """Skip a test on torch older than ``version``, saying which feature it needs."""
    import pytest
    from mmengine.utils import digit_version

    from mmdet_sk.utils.torch_compat import TORCH_VERSION
    return pytest.mark.skipif(
        TORCH_VERSION < digit_version(version),
        reason=f'needs torch>={version} ({why}); this is torch {torch.__version__}')


def build_detector(cfg: Union[str, Config], seed: int = 0) -> nn.Module:
    """Build the detector of a config with ``mmdet.registry.MODELS``, freshly initialised.

    Args:
        cfg (str | Config): Config file or loaded config; the backbone's ``init_cfg`` is
            dropped (no download).
        seed (int): Torch seed of the initialisation. Default: 0.

    Returns:
        nn.Module: The detector, in eval mode.
    """
    from mmdet.registry import MODELS

    cfg = Config.fromfile(cfg) if isinstance(cfg, str) else cfg
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


class RandomImages:
    """A dataset of random uint8 images, as a test pipeline packs them (``inputs`` only).

    Args:
        num (int): Number of images.
        size (tuple[int, int]): Height and width. Default: (64, 64).
        seed (int): Seed of the pixels. Default: 0.
    """

    def __init__(self, num: int, size: Tuple[int, int] = (64, 64), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = [torch.randint(0, 256, (3, ) + tuple(size), generator=g,
                                     dtype=torch.uint8) for _ in range(num)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict:
        return dict(inputs=self.images[idx])


def assert_records_selection(module: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Check that an SK module keeps its selection weights only while recording is on.

    Args:
        module (SKAttention | SKConv): The module, in eval mode (the forwards must agree).
        x (Tensor): An input (B, C, H, W).

    Returns:
        tuple[Tensor, Tensor]: The recorded weights (K, B, C) and the recorded forward's
        output, for the caller to check that they are the weights that forward used.
    """
    assert module.record_selection is False and module.last_selection is None
    module(x)
    assert module.last_selection is None  # nothing kept while recording is off
    module.record_selection = True
    try:
        out = module(x)
    finally:
        module.record_selection = False
    weights = module.last_selection
    assert weights.shape == (len(module.kernels), x.shape[0], out.shape[1])
    assert not weights.requires_grad and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(0), torch.ones(weights.shape[1:]))
    return weights, out
