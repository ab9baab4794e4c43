"""tools/model_converters/timm_sknet2mmdet.py: timm SKNet files -> SKNet ``init_cfg`` files.

timm cannot be imported here, so full-size timm state dicts are made from SKNets by the
inverse renaming (:func:`to_timm`), whose key names are checked against timm's own (the
reference file written by timm, whose small networks have the depth-18 and depth-50 layouts).
"""
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from mmdet_sk.models.backbones import SKNet
from mmdet_sk.models.backbones.timm_sknet import (TIMM_SKNETS, convert_timm_sknet,
                                                  read_state_dict, timm_sknet_arch,
                                                  timm_sknet_to_mmdet)
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


@pytest.fixture(scope='module')
def reference():
    return torch.load(REFERENCE, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('arch, tiny', [('skresnet18', 'sk_resnet_tiny'),
                                        ('skresnext50_32x4d', 'sk_resnext_tiny')])
def test_inverse_gives_timms_names_and_the_conversion_undoes_it(reference, arch, tiny):
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
    expected = sknet.state_dict()
    assert set(converted) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(converted[key], tensor), key


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
    root, expected, timm_sd = skresnet18
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
    assert set(saved['state_dict']) == set(expected)
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in expected.items())
    # and init_cfg takes it
    model = SKNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    assert torch.equal(model.layer3[1].conv1.fcs[1].weight, expected['layer3.1.conv1.fcs.1.weight'])


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
    """Every timm key but the classifier is converted; fc_select splits per path."""
    for ref in reference['models'].values():
        converted, rules, left = convert_timm_sknet(ref['state_dict'])
        assert left == ['fc.weight', 'fc.bias']
        params = sum(v.numel() for k, v in ref['state_dict'].items() if not k.startswith('fc.'))
        assert sum(v.numel() for v in converted.values()) == params
