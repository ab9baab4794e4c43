"""mmdet_sk.utils.block_benchmark: the variants of one SK block that the benchmarks time."""
import pytest
import torch

from mmdet_sk.models.layers import SKAttention
from mmdet_sk.utils.benchmark import measure
from mmdet_sk.utils.block_benchmark import (PRESETS, block_calls, build_block_variants,
                                            check_block_outputs)


@pytest.mark.parametrize('preset', list(PRESETS))
def test_variants_compute_the_reference_block(preset):
    models = build_block_variants(preset, 64, torch.device('cpu'))
    assert isinstance(models['ours'], SKAttention) and not models['ours_eval'].training
    x = torch.randn(2, 64, 6, 7)
    check_block_outputs(models, x)  # raises if ours or its fold differs from the reference
    with torch.no_grad():  # the fold has no BatchNorm left
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models['fold'].modules())


def test_calls_of_every_mode_and_their_times():
    models = build_block_variants('paper', 64, torch.device('cpu'))
    x, grad = torch.randn(1, 64, 5, 5), torch.randn(1, 64, 5, 5)
    for mode in ('fwd', 'fwd+bwd', 'infer'):
        fns = block_calls(models, mode, x.requires_grad_(mode != 'infer'), grad)
        assert set(fns) == {'ref', 'ours', 'branch', 'convs', 'GC'} | (
            {'fold'} if mode == 'infer' else set())
        if mode == 'fwd+bwd':  # the gradients of the input and of every parameter
            grads = fns['ours']()
            assert len(grads) == 1 + len(list(models['ours'].parameters()))
        times, rounds = measure(fns, torch.device('cpu'), budget=0., min_rounds=2)
        assert rounds == 2 and set(times) == set(fns) and all(t > 0 for t in times.values())
