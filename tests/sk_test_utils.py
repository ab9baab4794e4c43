"""Helpers shared by the tests (``tests/`` is on ``sys.path`` through its conftest)."""
import torch
from torch import nn

from mmdet_sk.models.layers import SKAttention


def with_running_stats(model: nn.Module, seed: int = 0, gates: bool = True) -> nn.Module:
    """Make ``model``'s weights trained-like; return it in eval mode.

    Every BatchNorm gets non-trivial statistics and affine parameters (so that folding
    matters, and so that a freshly built ResNet, whose blocks end in a zero BN, is no
    identity by accident). With ``gates``, every SK gate (which starts at 0, the identity)
    gets a value in (0, 1), so that the SK branches count in the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
            if gates and isinstance(m, SKAttention) and m.gate is not None:
                m.gate.copy_(torch.rand(m.gate.shape, generator=g))
    return model.eval()


def requires_torch(version: str, why: str):
    """Skip a test on torch older than ``version``, saying which feature it needs."""
    import pytest
    from mmengine.utils import digit_version

    from mmdet_sk.utils.torch_compat import TORCH_VERSION
    return pytest.mark.skipif(
        TORCH_VERSION < digit_version(version),
        reason=f'needs torch>={version} ({why}); this is torch {torch.__version__}')
