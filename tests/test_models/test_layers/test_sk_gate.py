"""SKAttention(gate=True): the identity at insertion, learning from the first steps; loading
state dicts without the block's keys."""
import pytest
import torch

from mmdet_sk.models.layers import SKAttention
from sk_test_utils import with_running_stats

PAPER = dict(kernels=(3, 3), dilations=(1, 2), groups=8, reduction=4, L=8)


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_gated_block_is_exactly_the_identity_at_init(mode):
    m = SKAttention(32, gate=True, **PAPER)
    m.init_weights()
    with_running_stats(m, gates=False)  # trained-like norms; the gate stays 0
    getattr(m, mode)()
    x = torch.randn(2, 32, 9, 11) * 3
    assert torch.equal(m(x), x)
    # The same block without the gate changes its input.
    bare = SKAttention(32, **PAPER)
    bare.load_state_dict({k: v for k, v in m.state_dict().items() if k != 'gate'})
    getattr(bare, mode)()
    assert not torch.allclose(bare(x), x, atol=1e-2)


def test_gate_one_is_the_bare_block():
    torch.manual_seed(0)
    gated = SKAttention(32, gate=True, **PAPER).eval()
    bare = SKAttention(32, **PAPER).eval()
    bare.load_state_dict({k: v for k, v in gated.state_dict().items() if k != 'gate'})
    with torch.no_grad():
        gated.gate.fill_(1.0)
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(gated(x), bare(x), rtol=1e-6, atol=1e-6)


def test_state_dict_keys_gate_only_when_asked():
    assert 'gate' not in SKAttention(32, **PAPER).state_dict()
    keys = list(SKAttention(32, gate=True, **PAPER).state_dict())
    assert keys[0] == 'gate' and SKAttention(32, gate=True, **PAPER).gate.shape == (32, )
    with pytest.raises(TypeError, match='gate'):
        SKAttention(32, gate=1)


def test_every_parameter_learns_within_two_steps():
    """Step 1 moves the gate (its gradient is not zero at 0); step 2 reaches the rest."""
    torch.manual_seed(0)
    m = SKAttention(32, gate=True, **PAPER)
    m.init_weights()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, target = torch.randn(4, 32, 8, 8), torch.randn(4, 32, 8, 8)
    grads = []
    for _ in range(2):
        opt.zero_grad()
        (m(x) - target).square().mean().backward()
        grads.append({n: p.grad.abs().sum().item() for n, p in m.named_parameters()})
        opt.step()
    assert grads[0]['gate'] > 0
    assert all(v == 0 for n, v in grads[0].items() if n != 'gate')  # s = 0 multiplies them
    for name, value in grads[1].items():
        assert value > 0, name


def test_state_dict_without_the_block_keeps_its_weights():
    torch.manual_seed(0)
    parent = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 1), SKAttention(32, gate=True,
                                                                          **PAPER))
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    plain = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 1)).state_dict()
    result = parent.load_state_dict(plain, strict=True)  # strict: nothing is missing
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in parent.state_dict().items():
        expected = plain[k] if k.startswith('0.') else before[k]
        assert torch.equal(v, expected), k


def test_partial_state_dict_is_still_reported():
    m = SKAttention(32, gate=True, **PAPER)
    partial = {k: v for k, v in m.state_dict().items() if not k.startswith('fcs.')}
    result = m.load_state_dict(partial, strict=False)
    assert sorted(result.missing_keys) == ['fcs.0.bias', 'fcs.0.weight', 'fcs.1.bias',
                                           'fcs.1.weight']
