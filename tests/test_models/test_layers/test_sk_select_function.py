"""The fused Fuse-and-Select Function of SK units: gradients, fallbacks, kernels."""
import copy

import pytest
import torch
from torch.func import functional_call

from mmdet_sk.models.layers import SKAttention, SKConv
from mmdet_sk.models.layers._select_function import channel_affine, channel_dot
from mmdet_sk.utils.block_benchmark import portable_copy
from sk_test_utils import with_running_stats


def _attention(**kwargs):
    torch.manual_seed(0)
    return SKAttention(8, groups=2, reduction=4, L=4, **kwargs)


def _units():
    """Every form the Function takes: 2 and 3 branches, gated and not, linear and paper Fuse."""
    units = [
        _attention(kernels=(3, 3), dilations=(1, 2)),
        _attention(kernels=(1, 3, 5), gate=True, fuse_cfg=dict()),
        _attention(kernels=(3, 5), gate=True),
        SKConv(8, 8, 3, 1, groups=2, gate=True, fuse_cfg=dict()),
    ]
    for unit in units:
        with_running_stats(unit)
        if unit.gate is not None:
            torch.nn.init.uniform_(unit.gate, 0.2, 0.8)
    return units


@pytest.mark.parametrize('index', range(4))
def test_float64_gradcheck(index):
    """The input, the gate and the attention network's weights (the Function's inputs; the
    branches' own weights take ordinary autograd from the branch maps' gradients)."""
    unit = _units()[index].double()
    names = [n for n, _ in unit.named_parameters()
             if n.split('.')[0] in ('fc', 'fcs', 'fuse_norm', 'gate')]
    x = torch.randn(2, 8, 5, 4, dtype=torch.float64, requires_grad=True)
    params = [unit.get_parameter(n) for n in names]

    def fn(x, *params):
        return functional_call(unit, dict(zip(names, params)), (x, ), strict=False)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('index, shape', [(i, (2, 8, 9, 7)) for i in range(4)] +
                         [(1, (2, 8, 48, 48)), (3, (2, 8, 48, 48))])
def test_fused_equals_the_plain_operators(index, shape, mode):
    """Outputs, every gradient, the running statistics and the recorded selection (maps
    below and above the size where the BatchNorm kernels take over)."""
    unit = getattr(_units()[index], mode)()
    plain = portable_copy(unit)
    unit.record_selection = plain.record_selection = True
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = unit(xa), plain(xb)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(unit.last_selection, plain.last_selection)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    tol = dict(rtol=1e-4, atol=1e-4)  # sums of thousands of products, in another order
    torch.testing.assert_close(xa.grad, xb.grad, **tol)
    for (name, p), q in zip(unit.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **tol, msg=lambda m: f'{name}: {m}')
    for (name, b), c in zip(unit.named_buffers(), plain.buffers()):
        torch.testing.assert_close(b, c, msg=name)
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(unit(x), plain(x))


def test_backward_twice_with_retained_graph():
    unit = _units()[1]
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y = unit(x)
    first = torch.autograd.grad(y.square().sum(), [x, *unit.parameters()], retain_graph=True)
    second = torch.autograd.grad(y.square().sum(), [x, *unit.parameters()])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_no_custom_function_under_tracing():
    """torch.jit.trace (and with it the TorchScript ONNX exporter) records plain operators,
    also in training mode with autograd on."""
    unit = _units()[2].train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    traced = torch.jit.trace(unit, x, check_trace=False)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert 'prim::PythonOp' not in kinds and 'aten::addcmul' in kinds


def test_onnx_export_in_training_mode_with_autograd(monkeypatch):
    """While ONNX exports (``torch.onnx.is_in_onnx_export``) the plain operators run."""
    unit = _units()[2].train()
    calls = []
    original = type(unit)._fuse_select_portable

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(type(unit), '_fuse_select_portable', spy)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    unit(x)
    assert not calls
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    unit(x)
    assert calls


def test_saved_activations_not_above_the_plain_operators():
    """The gated unit saves no ``out - x`` map: the branch maps and the input only."""
    unit = _units()[2].train()
    plain = portable_copy(unit)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)

    def saved_maps(module):
        storages = {}

        def pack(t):
            if t.numel() >= x.numel():
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x)
        return sum(storages.values()) / (x.numel() * x.element_size())

    assert saved_maps(unit) < saved_maps(plain)


@pytest.mark.parametrize('shape', [(2, 4, 3, 5), (2, 64, 24, 24)])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'bf16'])
def test_channel_kernels_are_the_plain_operators(shape, layout):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    if layout == 'channels_last':
        a, b = a.to(memory_format=torch.channels_last), b.to(memory_format=torch.channels_last)
    if layout == 'bf16':
        a, b = a.bfloat16(), b.bfloat16()
    dot = channel_dot(a, b, torch.float32)
    assert dot.dtype == torch.float32 and dot.shape == shape[:2]
    tol = dict(rtol=2e-2, atol=2e-1) if layout == 'bf16' else dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dot, (a.float() * b.float()).sum((2, 3)), **tol)
    scale, shift = torch.rand(shape[:2], generator=g), torch.randn(shape[:2], generator=g)
    out = channel_affine(a, scale, shift)
    assert out.dtype == a.dtype and out.shape == a.shape
    torch.testing.assert_close(out, torch.addcmul(shift[..., None, None].to(a.dtype), a,
                                                  scale[..., None, None].to(a.dtype)))


def test_gated_identity_at_gate_zero_on_the_fused_path():
    unit = SKConv(8, 8, 3, 1, groups=2, gate=True)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    torch.testing.assert_close(unit(x), unit.conv(x), rtol=0, atol=0)
    copy.deepcopy(unit).eval()(x.detach())
