"""SKNet against timm itself: the published SKNets, converted, stage by stage.

timm imports torchvision, which loads only in the compat stack (``make compat``); elsewhere
these tests skip and ``test_sknet.py`` compares with the reference file timm wrote.
For each of timm's ``skresnet18``, ``skresnet34`` and ``skresnext50_32x4d``: random weights
with trained-like BatchNorms, converted by the converter's functions, loaded whole, and the four
stage outputs equal to timm's ``features_only`` ones in eval and in train mode; the same for
mmpretrain's ``TIMMBackbone`` (timm inside an OpenMMLab backbone) where it is installed.
"""
import copy

import pytest
import torch

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import TIMM_SKNETS, timm_sknet_to_mmdet
from sk_test_utils import with_running_stats

timm = pytest.importorskip('timm')


def _close_to_scale(outs, expected, tol=1e-5):
    assert len(outs) == len(expected) == 4
    for out, exp in zip(outs, expected):
        assert out.shape == exp.shape
        assert (out - exp).abs().max() <= tol * exp.abs().max()


@pytest.fixture(scope='module', params=sorted(TIMM_SKNETS))
def pair(request):
    arch = request.param
    torch.manual_seed(0)
    model = with_running_stats(timm.create_model(arch, pretrained=False))
    timm_sd = model.state_dict()
    found, kwargs, (converted, _, left) = timm_sknet_to_mmdet(timm_sd)
    assert found == arch and left == ['fc.weight', 'fc.bias']
    ours = SKNet(**kwargs, out_indices=(0, 1, 2, 3), norm_eval=False)
    ours.load_state_dict(converted, strict=True)
    feats = timm.create_model(arch, pretrained=False, features_only=True,
                              out_indices=(1, 2, 3, 4))
    feats.load_state_dict({k: v for k, v in timm_sd.items() if not k.startswith('fc.')},
                          strict=True)
    n_timm = sum(p.numel() for p in model.parameters())
    return arch, ours, feats, timm_sd, n_timm


def test_parameter_counts_equal_timms(pair):
    arch, ours, _, _, n_timm = pair
    n_fc = 1000 * (ours.feat_dim + 1)
    assert sum(p.numel() for p in ours.parameters()) + n_fc == n_timm


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_stage_outputs_equal_timms(pair, mode):
    """float64, where train-mode BatchNorms do not magnify rounding (see
    ``tools/misc/timm_sknet_reference.py``): the same network to 1e-9 of each stage's scale."""
    _, ours, feats, _, _ = pair
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    ours, feats = copy.deepcopy(ours).double(), copy.deepcopy(feats).double()
    getattr(ours, mode)()
    getattr(feats, mode)()
    with torch.no_grad():
        _close_to_scale(ours(x.double()), feats(x.double()), tol=1e-9)


def test_float32_eval_outputs_equal_timms(pair):
    _, ours, feats, _, _ = pair
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    ours.eval()
    feats.eval()
    with torch.no_grad():
        _close_to_scale(ours(x), feats(x))


def test_mmpretrain_timm_backbone_computes_the_same(pair):
    mmpretrain = pytest.importorskip('mmpretrain')
    from mmpretrain.models.backbones import TIMMBackbone
    arch, ours, _, timm_sd, _ = pair
    wrapped = TIMMBackbone(model_name=arch, features_only=True, pretrained=False,
                           out_indices=(1, 2, 3, 4))
    wrapped.timm_model.load_state_dict(
        {k: v for k, v in timm_sd.items() if not k.startswith('fc.')}, strict=True)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    ours.eval()
    wrapped.eval()
    with torch.no_grad():
        _close_to_scale(ours(x), wrapped(x))
    assert mmpretrain.__version__
