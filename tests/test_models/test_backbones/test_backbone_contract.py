"""MMDetection's backbone contract where SK is inserted.

* A backbone with SK trains (forward and backward) on every input the plain backbone takes:
  mmdet's own tests train ResNet/ResNeXt on one 32x32 image, where the last stage is 1x1.
  With ``norm_eval=True`` the backbone's norms are frozen while SK's train; at one value per
  channel SK's norms use their running statistics (see ``test_sk_one_value.py``).
* SK in a frozen stage (``1..frozen_stages``) is frozen with it and logs one warning.
"""
import logging

import pytest
import torch
from mmdet.models.backbones import CSPDarknet, CSPNeXt, ResNet, ResNeXt
from mmengine.logging import MMLogger

from mmdet_sk.models.backbones import (PluginCSPDarknet, PluginCSPNeXt, PluginResNet,
                                      PluginResNeXt)
from mmdet_sk.models.layers import SKAttention, SKConv

SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=16, reduction=4,
          gate=True)
TRAINED = (False, True, True, True)
CSP = dict(deepen_factor=0.33, widen_factor=0.25)


def _resnet18(plain=False, **kwargs):
    if plain:
        return ResNet(depth=18, **kwargs)
    return PluginResNet(depth=18, plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv1'),
                                           dict(cfg=dict(SK, postfix='2'), stages=TRAINED,
                                                position='after_conv2')], **kwargs)


def _resnet50(plain=False, **kwargs):
    if plain:
        return ResNet(depth=50, **kwargs)
    return PluginResNet(depth=50, plugins=[dict(cfg=SK, stages=TRAINED, position='after_conv2')],
                        **kwargs)


def _resnext50(plain=False, **kwargs):
    if plain:
        return ResNeXt(depth=50, groups=8, base_width=4, base_channels=16, **kwargs)
    return PluginResNeXt(depth=50, groups=8, base_width=4, base_channels=16,
                         plugins=[dict(cfg=dict(SK, groups=8), stages=TRAINED,
                                       position='after_conv2')], **kwargs)


def _csp(plain=False, **kwargs):
    if plain:
        return CSPDarknet(**CSP, **kwargs)
    return PluginCSPDarknet(**CSP, plugins=[dict(cfg=SK, position='after_stage')], **kwargs)


def _cspnext(plain=False, **kwargs):
    if plain:
        return CSPNeXt(**CSP, **kwargs)
    return PluginCSPNeXt(**CSP, plugins=[dict(cfg=SK, position='after_stage')], **kwargs)


BUILDERS = [_resnet18, _resnet50, _resnext50, _csp, _cspnext]


def _train_step(model, x):
    model.train()
    outs = model(x)
    sum(out.mean() for out in outs).backward()
    return outs


def _sk_blocks(model):
    return [m for m in model.modules() if isinstance(m, (SKAttention, SKConv))]


@pytest.mark.parametrize('build', BUILDERS)
def test_batch_one_32x32_trains_under_norm_eval(build):
    """The last stage is 1x1: SK's training norms see one value per channel."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    _train_step(build(plain=True, norm_eval=True), x)  # the plain backbone runs
    model = build(norm_eval=True)
    model.init_weights()
    sks = _sk_blocks(model)
    with torch.no_grad():
        for sk in sks:
            sk.gate.fill_(0.5)  # let the branches count
    model.train()
    assert all(sk.training and sk.convs[0].bn.training for sk in sks)
    one_value, larger = [], []
    hooks = [sk.register_forward_pre_hook(
        lambda m, args: (one_value if args[0][0, 0].numel() == 1 else larger).append(m))
        for sk in sks]
    before = {id(sk): sk.convs[0].bn.running_mean.clone() for sk in sks}
    outs = _train_step(model, x)
    for hook in hooks:
        hook.remove()
    assert outs[-1].shape[-2:] == (1, 1)
    assert one_value and larger
    for sk in one_value:  # running statistics used, not updated
        assert torch.equal(sk.convs[0].bn.running_mean, before[id(sk)])
    for sk in larger:  # batch statistics, as before
        assert not torch.equal(sk.convs[0].bn.running_mean, before[id(sk)])
    for sk in sks:
        assert sk.gate.grad is not None and sk.convs[0].conv.weight.grad is not None


@pytest.mark.parametrize('build', BUILDERS)
def test_batch_one_without_norm_eval_fails_only_where_the_plain_backbone_fails(build):
    torch.manual_seed(0)
    # 64x64: the last stage is 2x2, every norm has values to normalise over.
    _train_step(build(plain=True, norm_eval=False), torch.randn(1, 3, 64, 64))
    _train_step(build(norm_eval=False), torch.randn(1, 3, 64, 64))
    # 32x32: the plain backbone's own training norms fail on the 1x1 last stage.
    small = torch.randn(1, 3, 32, 32)
    for plain in (True, False):
        with pytest.raises(ValueError, match='more than 1 value per channel'):
            _train_step(build(plain=plain, norm_eval=False), small)


@pytest.fixture
def warnings_logged():
    """The WARNING records that reach MMEngine's current logger (print_log's 'current')."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield lambda: [r.getMessage() for r in records if 'frozen' in r.getMessage()]
    logger.removeHandler(handler)


@pytest.mark.parametrize('build_with, where', [
    (lambda stages, frozen: PluginResNet(depth=18, frozen_stages=frozen, plugins=[
        dict(cfg=SK, stages=stages, position='after_conv1')]), 'PluginResNet-18'),
    (lambda stages, frozen: PluginResNet(depth=50, frozen_stages=frozen, plugins=[
        dict(cfg=SK, stages=stages, position='after_conv2')]), 'PluginResNet-50'),
    (lambda stages, frozen: PluginResNeXt(depth=50, groups=8, base_channels=16,
                                          frozen_stages=frozen, plugins=[
        dict(cfg=dict(SK, groups=8), stages=stages, position='after_conv2')]),
     'PluginResNeXt-50'),
    (lambda stages, frozen: PluginCSPDarknet(**CSP, frozen_stages=frozen, plugins=[
        dict(cfg=SK, stages=stages, position='after_stage')]), 'PluginCSPDarknet'),
    (lambda stages, frozen: PluginCSPNeXt(**CSP, frozen_stages=frozen, plugins=[
        dict(cfg=SK, stages=stages, position='after_stage')]), 'PluginCSPNeXt'),
    (lambda stages, frozen: PluginResNet(depth=18, frozen_stages=frozen, dcn=dict(
        type='SKConv', gate=True), stage_with_dcn=stages), 'PluginResNet-18'),  # SKConv
])
def test_plugins_in_frozen_stages_warn_once(build_with, where, warnings_logged):
    model = build_with((True, True, True, False), 2)
    (message, ) = warnings_logged()  # one warning for the whole backbone
    assert where in message and 'stage(s) 1, 2 ' in message and 'frozen_stages=2' in message
    # Frozen means frozen, as in mmdet: the SK blocks there neither learn nor update stats.
    model.train()
    sks = _sk_blocks(model)
    assert all(sk.gate.requires_grad == sk.training for sk in sks)
    assert any(not sk.gate.requires_grad for sk in sks) and any(sk.training for sk in sks)

    build_with(TRAINED, 1)  # SK only in the trained stages
    build_with((True, True, True, True), -1)  # nothing frozen
    assert len(warnings_logged()) == 1
