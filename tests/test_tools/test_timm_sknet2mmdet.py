"""tools/model_converters/timm_sknet2mmdet.py: timm SKNet files -> SKNet ``init_cfg`` files.

The converted values are checked against timm's own layout (:func:`assert_converted`): each
SK unit against timm's ``SelectiveKernel`` forward computed from timm's tensors, on the state
dicts timm wrote in the reference file (small networks with the depth-18 and depth-50
layouts). timm cannot be imported here, so the full-size timm state dicts the tool needs are
made from SKNets by the inverse renaming (:func:`to_timm`), whose key names are checked
against timm's own; their conversions are checked against their timm layout as well, not by
converting back.
"""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import (TIMM_SKNETS, convert_timm_sknet,
                                                  read_state_dict, timm_sknet_arch,
                                                  timm_sknet_to_mmdet)
from mmdet_sk.models.layers import SKConv
from sk_test_utils import with_running_stats

TOOL = 'tools/model_converters/timm_sknet2mmdet.py'
REFERENCE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                     'timm_sknet_reference.pth')


def to_timm(state_dict):
    """An SKNet state dict under timm's names and layouts, plus a 1000-class classifier."""
    units = {m[1] for k in state_dict for m in [re.match(r'^(.*)\.dilated_convs\.', k)] if m}
    out, fcs = {}, {}
    for key, t in state_dict.items():
        unit, _, rest = key.rpartition('.conv')
        head = f'{unit}.conv{rest[0]}' if unit else ''
        if head in units:
            part = rest[2:]
            if part == 'weight':
                out[f'{head}.paths.0.conv.weight'] = t
            elif part.startswith('dilated_convs.'):
                out[f'{head}.paths.{int(part.split(".")[1]) + 1}.conv.weight'] = t
            elif part.startswith('norms.'):
                _, i, name = part.split('.')
                out[f'{head}.paths.{i}.bn.{name}'] = t
            elif part == 'fc.weight':
                out[f'{head}.attn.fc_reduce.weight'] = t[:, :, None, None]
            elif part.startswith('fuse_norm.'):
                out[f'{head}.attn.bn.{part[len("fuse_norm."):]}'] = t
            elif part.startswith('fcs.'):
                fcs.setdefault(head, []).append(t)
                if len(fcs[head]) == 2:
                    out[f'{head}.attn.fc_select.weight'] = torch.cat(fcs[head])[:, :, None,
                                                                                None]
            continue
        m = re.match(r'^(layer\d+\.\d+)\.(conv|bn)(\d)\.(\w+)$', key)
        if m:
            out[f'{m[1]}.conv{m[3]}.{"conv" if m[2] == "conv" else "bn"}.{m[4]}'] = t
        else:
            out[key] = t
    channels = state_dict['layer4.0.downsample.1.weight'].numel()
    out['fc.weight'] = torch.randn(1000, channels)
    out['fc.bias'] = torch.randn(1000)
    return out


def timm_selective_kernel(timm_sd, unit, x, stride, groups):
    """timm's ``SelectiveKernel`` (``timm/layers/selective_kernel.py``, ``keep_3x3``) in eval
    mode on ``x``, from its tensors under timm's names: path ``i`` is a 3x3 conv with dilation
    and padding ``i + 1``, BN and ReLU, on its slice of the input with ``split_input``; the
    paths are stacked (B, P, C, H, W); the attention pools their sum, applies the 1x1 convs
    ``fc_reduce`` (BN, ReLU) and ``fc_select``, views the (B, P * C) logits as (B, P, C) and
    takes the softmax over the paths."""
    num = sum(1 for k in timm_sd
              if re.fullmatch(rf'{re.escape(unit)}\.paths\.\d+\.conv\.weight', k))
    w0 = timm_sd[f'{unit}.paths.0.conv.weight']
    split = w0.shape[1] * groups < x.shape[1]  # split_input: each path sees 1 / P of x
    xs = torch.split(x, x.shape[1] // num, 1) if split else [x] * num

    def bn(y, prefix):
        return F.batch_norm(y, timm_sd[f'{prefix}.running_mean'],
                            timm_sd[f'{prefix}.running_var'], timm_sd[f'{prefix}.weight'],
                            timm_sd[f'{prefix}.bias'])

    paths = torch.stack([
        F.relu(bn(F.conv2d(xi, timm_sd[f'{unit}.paths.{i}.conv.weight'], stride=stride,
                           padding=i + 1, dilation=i + 1, groups=groups), f'{unit}.paths.{i}.bn'))
        for i, xi in enumerate(xs)], 1)
    s = paths.sum(1).mean((2, 3), keepdim=True)
    z = F.relu(bn(F.conv2d(s, timm_sd[f'{unit}.attn.fc_reduce.weight']), f'{unit}.attn.bn'))
    logits = F.conv2d(z, timm_sd[f'{unit}.attn.fc_select.weight'])
    attn = logits.view(x.shape[0], num, -1, 1, 1).softmax(1)
    return (paths * attn).sum(1)


def assert_converted(timm_sd, converted, sknet_kwargs):
    """``converted`` (an SKNet state dict) holds the tensors of ``timm_sd`` in timm's layout.

    It loads whole into ``SKNet(**sknet_kwargs)``; each SK unit computes what timm's
    ``SelectiveKernel`` computes from the timm tensors (:func:`timm_selective_kernel`, in
    float64, on a random input); every other timm tensor is under mmdet's name for it
    (``convK.conv`` / ``convK.bn`` of a plain conv-BN are ``convK`` / ``bnK``).
    """
    model = SKNet(**sknet_kwargs)
    model.load_state_dict(converted, strict=True)
    model.double().eval()
    timm_64 = {k: v.double() for k, v in timm_sd.items() if v.is_floating_point()}
    g = torch.Generator().manual_seed(0)
    units = [(n, m) for n, m in model.named_modules() if isinstance(m, SKConv)]
    assert units
    for name, unit in units:
        x = torch.randn(2, unit.in_channels, 6, 6, generator=g, dtype=torch.float64)
        with torch.no_grad():
            expected = timm_selective_kernel(timm_64, name, x, unit.stride, unit.groups)
            torch.testing.assert_close(unit(x), expected, msg=name)
    for key, tensor in timm_sd.items():
        if key.startswith('fc.') or any(key.startswith(n + '.') for n, _ in units):
            continue
        m = re.fullmatch(r'(layer\d+\.\d+)\.conv(\d)\.(conv|bn)\.(\w+)', key)
        name = (f'{m[1]}.{"conv" if m[3] == "conv" else "bn"}{m[2]}.{m[4]}'
                if m else key)  # the stem and downsample keep their names
        assert torch.equal(converted[name], tensor), key


@pytest.fixture(scope='module')
def reference():
    return torch.load(REFERENCE, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('name', ['sk_resnet_tiny', 'sk_resnext_tiny'])
def test_conversion_keeps_timms_layout(reference, name):
    """timm's own tensors (the reference file): each SK unit computes timm's SelectiveKernel,
    ``fc_select``'s logits split by path as timm splits them."""
    ref = reference['models'][name]
    converted, _, left = convert_timm_sknet(ref['state_dict'])
    assert left == ['fc.weight', 'fc.bias']
    assert_converted(ref['state_dict'], converted, ref['sknet'])


@pytest.mark.parametrize('arch, tiny', [('skresnet18', 'sk_resnet_tiny'),
                                        ('skresnext50_32x4d', 'sk_resnext_tiny')])
def test_inverse_gives_timms_names_and_the_conversion_its_layout(reference, arch, tiny):
    torch.manual_seed(0)
    sknet = with_running_stats(SKNet(**TIMM_SKNETS[arch]))
    timm_sd = to_timm(sknet.state_dict())
    timm_keys = set(reference['models'][tiny]['state_dict'])  # timm's own names
    if arch == 'skresnet18':  # the small net's 64-channel stem meets 8-channel stage 1
        timm_keys = {k for k in timm_keys if not k.startswith('layer1.0.downsample.')}
    assert set(timm_sd) == timm_keys
    assert timm_sknet_arch(timm_sd) == arch
    found, kwargs, (converted, rules, left) = timm_sknet_to_mmdet(timm_sd, arch)
    assert (found, kwargs, left) == (arch, TIMM_SKNETS[arch], ['fc.weight', 'fc.bias'])
    assert sum(count for _, count in rules) == len(timm_sd) - 2
    assert_converted(timm_sd, converted, kwargs)


def _run(repo_root, *args):
    return subprocess.run([sys.executable, TOOL, *args], cwd=repo_root, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope='module')
def skresnet18(tmp_path_factory):
    torch.manual_seed(1)
    sknet = with_running_stats(SKNet(depth=18))
    root = tmp_path_factory.mktemp('timm')
    timm_sd = to_timm(sknet.state_dict())
    torch.save(timm_sd, root / 'pytorch_model.bin')
    return root, sknet.state_dict(), timm_sd


@pytest.mark.parametrize('fmt', ['bin', 'safetensors'])
def test_tool_converts_prints_and_writes_an_init_cfg_checkpoint(repo_root, skresnet18, fmt):
    root, _, timm_sd = skresnet18
    src = root / 'pytorch_model.bin'
    if fmt == 'safetensors':
        safetensors = pytest.importorskip('safetensors.torch')
        src = root / 'model.safetensors'
        safetensors.save_file({k: v.contiguous() for k, v in timm_sd.items()}, str(src))
    dst = root / f'out_{fmt}' / 'sknet18.pth'
    result = _run(repo_root, str(src), str(dst), '--arch', 'skresnet18')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'timm skresnet18 -> SKNet(depth=18)' in out
    assert '8 x layerS.B.convK.attn.fc_reduce.weight (1x1 conv)' in out
    assert 'not converted: fc.bias, fc.weight (the ImageNet classifier)' in out
    assert 'loads whole into SKNet' in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['timm_arch'] == 'skresnet18'
    assert_converted(timm_sd, saved['state_dict'], dict(depth=18))
    # and init_cfg takes it
    model = SKNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved['state_dict'].items())


def test_tool_refuses_other_architectures(repo_root, skresnet18, tmp_path):
    root, expected, timm_sd = skresnet18
    src = str(root / 'pytorch_model.bin')
    result = _run(repo_root, src, str(tmp_path / 'x.pth'), '--arch', 'skresnext50_32x4d')
    assert result.returncode != 0
    assert 'is a skresnet18, not the skresnext50_32x4d that --arch asks for' in result.stderr
    assert not (tmp_path / 'x.pth').exists()

    plain = {k: v for k, v in timm_sd.items() if '.paths.' not in k and '.attn.' not in k}
    with pytest.raises(ValueError, match='not a timm SKNet') as info:
        timm_sknet_to_mmdet(plain)
    assert 'skresnet18, skresnet34, skresnext50_32x4d' in str(info.value)
    with pytest.raises(ValueError, match='already'):
        timm_sknet_to_mmdet(expected)
    with pytest.raises(ValueError, match='--arch must be one of'):
        timm_sknet_to_mmdet(timm_sd, 'skresnet50')


def test_other_timm_sk_networks_are_named_and_refused():
    """timm's skresnet50 (split input, no groups; no published weights) is not SKNet-50."""
    sknet = SKNet(depth=50, groups=1, base_width=64, sk_cfg=dict(split_input=True))
    with pytest.raises(ValueError, match='another architecture.*bottleneck'):
        timm_sknet_arch(to_timm(sknet.state_dict()))


def test_read_state_dict_unwraps_and_refuses_non_tensors(tmp_path):
    sd = {'conv1.weight': torch.ones(2)}
    for wrapper in ('state_dict', 'model'):
        torch.save({wrapper: sd, 'epoch': 3}, tmp_path / f'{wrapper}.pth')
        assert read_state_dict(str(tmp_path / f'{wrapper}.pth')).keys() == sd.keys()
    torch.save({'module.conv1.weight': torch.ones(2)}, tmp_path / 'ddp.pth')
    assert list(read_state_dict(str(tmp_path / 'ddp.pth'))) == ['conv1.weight']
    torch.save({'a': 1}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='no state dict'):
        read_state_dict(str(tmp_path / 'bad.pth'))


def test_converting_keeps_every_tensor_once(reference):
    """Every timm key but the classifier is converted, every value once (none dropped, none
    repeated): the sorted values of the conversion are those of timm's tensors. Where each
    one goes is :func:`assert_converted`'s check."""
    for ref in reference['models'].values():
        converted, rules, left = convert_timm_sknet(ref['state_dict'])
        assert left == ['fc.weight', 'fc.bias']

        def values(tensors):
            return torch.cat([t.double().flatten() for t in tensors]).sort().values

        timm_values = values(v for k, v in ref['state_dict'].items() if not k.startswith('fc.'))
        assert torch.equal(values(converted.values()), timm_values)
