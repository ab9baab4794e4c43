import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.runner import load_checkpoint

from mmdet_sk.models.backbones import PluginBasicBlock, PluginResNet
from mmdet_sk.models.layers import SKAttention
from sk_test_utils import with_running_stats

SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=16, reduction=4)


def _count_sk(model):
    return sum(isinstance(m, SKAttention) for m in model.modules())


@pytest.mark.parametrize('position', ['after_conv1', 'after_conv2'])
def test_resnet18_takes_plugins(position):
    model = PluginResNet(
        depth=18, plugins=[dict(cfg=SK, stages=(False, True, True, False), position=position)])
    assert isinstance(model.layer1[0], PluginBasicBlock)
    assert _count_sk(model) == 4  # 2 blocks in each of 2 stages
    assert _count_sk(model.layer1) == 0 and _count_sk(model.layer4) == 0
    sk = model.layer2[0].sk
    assert sk.in_channels == 128
    model.init_weights()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]


def test_resnet18_without_plugins_matches_resnet():
    """Trained-like norms: a fresh eval-mode BatchNorm is nearly the identity, under which a
    block that skipped or swapped a norm would still match."""
    torch.manual_seed(0)
    ours, ref = with_running_stats(PluginResNet(depth=18)), ResNet(depth=18)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.eval()  # mmdet's ResNet.train() returns None: no chaining
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b)


def test_resnet50_bottleneck_plugins():
    model = PluginResNet(
        depth=50, plugins=[dict(cfg=SK, stages=(False, True, True, True), position='after_conv2')])
    assert _count_sk(model) == 4 + 6 + 3


def test_zero_init_residual_still_applies_to_basic_blocks():
    model = PluginResNet(depth=18, plugins=[dict(cfg=SK, position='after_conv2')])
    model.init_weights()
    assert torch.all(model.layer1[0].norm2.weight == 0)


def test_plain_resnet_checkpoint_loads_with_only_sk_keys_missing(tmp_path):
    plain = ResNet(depth=18)
    path = tmp_path / 'r18.pth'
    torch.save({'state_dict': plain.state_dict()}, path)
    model = PluginResNet(
        depth=18, plugins=[dict(cfg=SK, stages=(False, True, True, True),
                                position='after_conv1')],
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value)
    missing = set(model.state_dict()) - set(plain.state_dict())
    assert missing and all('.sk.' in k for k in missing)
    # And the other way round through MMEngine's loader: nothing unexpected.
    ckpt = load_checkpoint(PluginResNet(depth=18, plugins=[dict(cfg=SK, position='after_conv1')]),
                           str(path), strict=False)
    assert set(ckpt['state_dict']) == set(plain.state_dict())


@pytest.mark.parametrize('plugins, error, words', [
    ([dict(cfg=SK, position='after_conv3')], ValueError,
     ['position', "'after_conv3'", 'after_conv1, after_conv2']),
    ([dict(cfg=SK, stages=(True, False), position='after_conv1')], ValueError,
     ['stages', 'one bool per stage', '4']),
    ([dict(cfg=dict(type='SKAttentionn'), position='after_conv1')], KeyError,
     ["'SKAttentionn'", 'not registered', 'custom_imports']),
    ([dict(position='after_conv1')], TypeError, ['cfg']),
])
def test_bad_plugins_are_named(plugins, error, words):
    with pytest.raises(error) as info:
        PluginResNet(depth=18, plugins=plugins)
    for word in words:
        assert word in str(info.value)


def test_sk_norms_train_under_norm_eval_while_pretrained_ones_stay_frozen():
    """MMDetection's R-50 configs set norm_eval=True and frozen_stages=1."""
    torch.manual_seed(0)
    model = PluginResNet(
        depth=50, norm_eval=True, frozen_stages=1,
        plugins=[dict(cfg=dict(SK, gate=True), stages=(True, True, False, False),
                      position='after_conv2')])
    model.init_weights()
    model.train()
    assert not model.norm1.training and not model.layer2[0].norm1.training
    assert not model.layer1[0].sk.convs[0].bn.training  # a frozen stage stays frozen
    sk = model.layer2[0].sk
    assert sk.training and all(branch.bn.training for branch in sk.convs)
    before = [b.bn.running_mean.clone() for b in sk.convs]
    frozen = model.layer2[0].bn2.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) + 1)
    assert all(not torch.equal(b.bn.running_mean, m) for b, m in zip(sk.convs, before))
    assert torch.equal(model.layer2[0].bn2.running_mean, frozen)
    model.eval()
    assert not sk.training and not sk.convs[0].bn.training
