"""SKAttention through ``torch.onnx.export`` and ONNX Runtime.

torch 2.13's ``torch.onnx.export`` (the ``torch.export``-based exporter, its default) needs the
``onnx`` and ``onnxscript`` packages; ``onnxruntime`` runs the graph on its
``CPUExecutionProvider``. Each preset is exported from eval mode with non-trivial BatchNorm
statistics, then run on a new input and compared with PyTorch.

Tolerance: the largest absolute difference is at most 1e-5 of the output's largest magnitude
(measured on this project's CPU: 1e-7 to 6e-7).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mmdet_sk.models.layers import SKAttention
from sk_test_utils import requires_torch, with_running_stats

pytestmark = requires_torch('2.6', 'torch.onnx.export with external_data (torch.export-based)')

RTOL = 1e-5
SHAPE = (2, 64, 16, 16)


def export_and_run(model, path, x):
    """Export ``model`` (example input of ``x``'s shape), run it in ONNX Runtime on ``x``."""
    torch.onnx.export(model, (torch.rand(x.shape), ), str(path), external_data=False,
                      verbose=False)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    assert len(session.get_inputs()) == 1
    return session.run(None, {session.get_inputs()[0].name: x.numpy()}), onnx.load(str(path))


def default_preset():
    return SKAttention(64)  # the defaults (the reference's): kernels 1/3/5/7, groups 1, r=16, L=32


def paper_preset():
    return SKAttention(64, kernels=(3, 3), dilations=(1, 2), groups=32)


def paper_preset_folded():
    return with_running_stats(paper_preset()).eval().fold_bn()


@pytest.mark.parametrize('build', [default_preset, paper_preset, paper_preset_folded])
def test_sk_block_onnx_matches_pytorch(build, tmp_path):
    torch.manual_seed(0)
    block = with_running_stats(build())
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    (out, ), graph = export_and_run(block, tmp_path / 'sk.onnx', x)
    with torch.no_grad():
        ref = block(x).numpy()
    assert out.shape == ref.shape == SHAPE
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count('Conv') == len(block.convs) and 'Softmax' in ops
    diff = np.abs(out - ref).max()
    assert diff <= RTOL * np.abs(ref).max(), f'max abs diff {diff:.3g}'
