"""Numerics: bf16 mixed precision on CPU, degenerate inputs, determinism.

MMEngine's ``AmpOptimWrapper`` needs a GPU; on CPU, ``BF16OptimWrapper`` (or
``tools/train.py --amp``) trains under bf16 autocast. SKAttention pools and normalises its
selection in fp32, so its output stays finite for all-zero, constant and very large inputs,
batch size 1 and 1x1 maps, in training and eval mode, with and without autocast.
"""
import json

import pytest
import torch
from mmcv.ops import RoIAlign, nms
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper

from mmdet_sk.datasets import data_root_options
from mmdet_sk.models.layers import SKAttention
from mmdet_sk.utils import BF16OptimWrapper
from mmdet_sk.utils.amp import mmcv_ops_in_fp32_under_cpu_autocast
from reliability_utils import DEMO_SK, run_preflight, tool, write_config

INPUTS = {
    'zeros': lambda: torch.zeros(2, 64, 16, 16),
    'constant': lambda: torch.full((2, 64, 16, 16), 3.0),
    'large 1e4': lambda: torch.randn(2, 64, 16, 16) * 1e4,
    'large 1e15': lambda: torch.randn(2, 64, 16, 16) * 1e15,
    'large 1e30': lambda: torch.randn(2, 64, 16, 16) * 1e30,
    'batch 1': lambda: torch.randn(1, 64, 16, 16),
    '1x1 maps': lambda: torch.randn(2, 64, 1, 1),
}


def sk_block(seed=0):
    torch.manual_seed(seed)
    return SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32, reduction=16, L=32)


@pytest.mark.parametrize('bf16', [False, True], ids=['fp32', 'bf16'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('name', list(INPUTS))
def test_sk_stays_finite(name, training, bf16):
    block = sk_block().train(training)
    x = INPUTS[name]().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        out = block(x)
        _, selection = block.branch_weights(x)
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert selection.dtype == torch.float32  # softmax in fp32
    assert torch.allclose(selection.sum(0), torch.ones(()), atol=1e-6)
    out.float().sum().backward()
    grads = [x.grad] + [p.grad for p in block.parameters() if p.grad is not None]
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_one_value_per_channel_trains_with_running_stats():
    """Batch 1 with 1x1 maps: SK's BatchNorms normalise with their running statistics."""
    for bf16 in (False, True):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            out = sk_block().train()(torch.randn(1, 64, 1, 1))
        assert torch.isfinite(out).all()
    assert torch.isfinite(sk_block().eval()(torch.randn(1, 64, 1, 1))).all()


@pytest.mark.parametrize('bf16', [False, True], ids=['fp32', 'bf16'])
def test_deterministic_mode_gives_identical_results_twice(bf16):
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            block = sk_block(seed=1).train()
            x = torch.randn(2, 64, 16, 16, generator=torch.Generator().manual_seed(2))
            x.requires_grad_()
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                out = block(x)
            out.float().square().sum().backward()
            results.append([out, x.grad] + [p.grad for p in block.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*results))
    finally:
        torch.use_deterministic_algorithms(False)


def test_mmengine_amp_wrapper_needs_a_gpu_and_preflight_says_what_to_use(monkeypatch, tiny_coco):
    if torch.cuda.is_available():
        pytest.skip('AmpOptimWrapper works with a GPU')
    optimizer = torch.optim.SGD(sk_block().parameters(), lr=0.1)
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=optimizer, dtype='bfloat16')
    with pytest.raises(ValueError, match=r"optim_wrapper.type='AmpOptimWrapper' needs a GPU.*"
                       r"optim_wrapper.type='BF16OptimWrapper'.*--amp"):
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--cfg-options',
                      'optim_wrapper.type=AmpOptimWrapper', 'optim_wrapper.dtype=bfloat16',
                      *data_root_options(tiny_coco))


def test_bf16_wrapper_rejects_float16():
    optimizer = torch.optim.SGD(sk_block().parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"`dtype` must be 'bfloat16', got 'float16'"):
        BF16OptimWrapper(optimizer=optimizer, dtype='float16')


def test_sk_block_trains_under_bf16_wrapper():
    block = sk_block().train()
    wrapper = BF16OptimWrapper(optimizer=torch.optim.SGD(block.parameters(), lr=0.05),
                               loss_scale='dynamic')  # an AmpOptimWrapper argument: ignored
    before = [p.detach().clone() for p in block.parameters()]
    x, target = torch.randn(4, 64, 8, 8), torch.randn(4, 64, 8, 8)
    losses = []
    for _ in range(5):
        with wrapper.optim_context(block):
            out = block(x)
            loss = (out.float() - target).square().mean()
        assert out.dtype == torch.bfloat16
        wrapper.update_params(loss)
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in block.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, block.parameters()))
    assert torch.isfinite(torch.tensor(losses)).all() and losses[-1] < losses[0]


def test_mmcv_fp32_ops_run_under_cpu_autocast():
    """NMS and RoIAlign run in fp32 inside CPU autocast, and are unchanged outside it."""
    mmcv_ops_in_fp32_under_cpu_autocast()  # what building a BF16OptimWrapper does
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(20, 2, generator=g) * 30], 1)
    scores = torch.rand(20, generator=g)
    feats = torch.rand(1, 8, 16, 16, generator=g)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 12.0], [0, 4.0, 2.0, 15.0, 8.0]])
    roi_align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2)
    ref_dets, ref_keep = nms(boxes, scores, 0.5)
    ref_feats = roi_align(feats, rois)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        dets, keep = nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
        pooled = roi_align(feats.bfloat16(), rois.bfloat16())
    assert pooled.dtype == torch.bfloat16
    assert torch.allclose(pooled.float(), ref_feats, atol=2e-2)
    assert len(set(keep.tolist()) ^ set(ref_keep.tolist())) <= 2  # bf16 rounding of boxes
    with pytest.raises(RuntimeError, match='expected scalar type Float'):
        nms(boxes.bfloat16(), scores.bfloat16(), 0.5)  # outside autocast: mmcv as it is


def test_sk_detector_bf16_losses_are_deterministic():
    cfg = Config.fromfile(DEMO_SK)
    cfg.model.backbone.init_cfg = None
    mmcv_ops_in_fp32_under_cpu_autocast()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            torch.manual_seed(0)
            model = MODELS.build(cfg.model).train()
            packed = demo_mm_inputs(2, [[3, 128, 128]] * 2, num_items=[3, 2], num_classes=5)
            data = model.data_preprocessor(packed, True)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                losses = model(**data, mode='loss')
            total, log_vars = model.parse_losses(losses)
            total.backward()
            runs.append([total] + [p.grad for p in model.backbone.parameters()])
        assert torch.isfinite(runs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(*runs))
    finally:
        torch.use_deterministic_algorithms(False)


def test_train_tool_amp_flag_trains_the_sk_detector_in_bf16(tiny_coco, tmp_path):
    log = tmp_path / 'log.jsonl'
    config = write_config(tmp_path / 'cfg.py', tiny_coco, max_iters=2, custom_hooks=[
        dict(type='RecorderHook', out_file=str(log))])
    out = tool('train.py', config, '--work-dir', str(tmp_path / 'work'), '--amp')
    assert '--amp without a GPU: bf16 autocast' in out and "type='BF16OptimWrapper'" in out
    iters = [json.loads(line) for line in open(log) if '"iter"' in line]
    assert [r['sk_dtype'] for r in iters] == ['torch.bfloat16'] * 2
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in iters)
