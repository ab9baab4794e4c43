# Copyright (c) mmdet-sk contributors. All rights reserved.
"""timm's ImageNet SKNet weights as :class:`~mmdet_sk.models.backbones.SKNet` weights.

timm (``timm/models/sknet.py``) publishes ``skresnet18.ra_in1k``, ``skresnet34.ra_in1k`` and
``skresnext50_32x4d.ra_in1k`` (the paper's SKNet-50). Their state dicts differ from SKNet's
by names and two layouts only:

* ``convK.conv.weight`` / ``convK.bn.*`` of a plain conv-BN are mmdet's ``convK.weight`` /
  ``bnK.*``;
* an SK unit's ``paths.i.conv`` / ``paths.i.bn`` are SKConv's ``weight`` (branch 0),
  ``dilated_convs.{i-1}`` and ``norms.i``; ``attn.fc_reduce`` (a 1x1 conv) is ``fc`` (a
  linear layer); ``attn.bn`` is ``fuse_norm``; ``attn.fc_select`` (one 1x1 conv with
  ``branches * C`` outputs, path-major) is the ``branches`` linear layers ``fcs.i``.

The stem (``conv1``, ``bn1``) and ``downsample.{0,1}`` keep their names; the classifier
(``fc.*``) has no place in a backbone and is left out.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor

#: The published timm SKNets and the SKNet arguments each loads into.
TIMM_SKNETS: Dict[str, dict] = {
    'skresnet18': dict(depth=18),
    'skresnet34': dict(depth=34),
    'skresnext50_32x4d': dict(depth=50, groups=32, base_width=4),
}

_UNIT = r'(layer\d+\.\d+\.conv\d)'


# (timm pattern, shown as, convert(match, tensor, paths of the unit) -> {mmdet name: tensor}).
# The first matching rule converts a key.
_RULES: List[Tuple[str, str, Callable[[re.Match, Tensor, int], Dict[str, Tensor]]]] = [
    (rf'^{_UNIT}\.paths\.0\.conv\.weight$',
     'layerS.B.convK.paths.0.conv.weight -> layerS.B.convK.weight',
     lambda m, t, n: {f'{m[1]}.weight': t}),
    (rf'^{_UNIT}\.paths\.(\d+)\.conv\.weight$',
     'layerS.B.convK.paths.i.conv.weight -> layerS.B.convK.dilated_convs.(i-1).weight',
     lambda m, t, n: {f'{m[1]}.dilated_convs.{int(m[2]) - 1}.weight': t}),
    (rf'^{_UNIT}\.paths\.(\d+)\.bn\.(\w+)$',
     'layerS.B.convK.paths.i.bn.* -> layerS.B.convK.norms.i.*',
     lambda m, t, n: {f'{m[1]}.norms.{m[2]}.{m[3]}': t}),
    (rf'^{_UNIT}\.attn\.fc_reduce\.weight$',
     'layerS.B.convK.attn.fc_reduce.weight (1x1 conv) -> layerS.B.convK.fc.weight (linear)',
     lambda m, t, n: {f'{m[1]}.fc.weight': t.flatten(1)}),
    (rf'^{_UNIT}\.attn\.bn\.(\w+)$',
     'layerS.B.convK.attn.bn.* -> layerS.B.convK.fuse_norm.*',
     lambda m, t, n: {f'{m[1]}.fuse_norm.{m[2]}': t}),
    (rf'^{_UNIT}\.attn\.fc_select\.weight$',
     'layerS.B.convK.attn.fc_select.weight (1x1 conv, paths x C outputs, path-major) -> '
     'layerS.B.convK.fcs.i.weight (one linear layer per path)',
     lambda m, t, n: {f'{m[1]}.fcs.{i}.weight': rows.clone()
                      for i, rows in enumerate(t.flatten(1).reshape(n, -1, t.shape[1]))}),
    (r'^(layer\d+\.\d+)\.conv(\d)\.conv\.weight$',
     'layerS.B.convK.conv.weight -> layerS.B.convK.weight',
     lambda m, t, n: {f'{m[1]}.conv{m[2]}.weight': t}),
    (r'^(layer\d+\.\d+)\.conv(\d)\.bn\.(\w+)$',
     'layerS.B.convK.bn.* -> layerS.B.bnK.*',
     lambda m, t, n: {f'{m[1]}.bn{m[2]}.{m[3]}': t}),
    (r'^(conv1\.weight|bn1\.\w+|layer\d+\.\d+\.downsample\.[01]\.\w+)$',
     'conv1.weight, bn1.*, layerS.B.downsample.{0,1}.* (same names)',
     lambda m, t, n: {m[1]: t}),
]


def _stage_blocks(state_dict: Dict[str, Tensor]) -> Tuple[int, ...]:
    blocks: Dict[int, set] = {}
    for key in state_dict:
        m = re.match(r'^layer(\d+)\.(\d+)\.', key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    return tuple(len(blocks[s]) for s in sorted(blocks))


def timm_sknet_arch(state_dict: Dict[str, Tensor]) -> str:
    """Name the published timm SKNet whose architecture ``state_dict`` has.

    Args:
        state_dict (dict[str, Tensor]): A timm state dict.

    Returns:
        str: A key of :data:`TIMM_SKNETS`.

    Raises:
        ValueError: The state dict is not one of them, with what it is instead.
    """
    names = ', '.join(TIMM_SKNETS)
    if any('.dilated_convs.' in k or '.fcs.' in k for k in state_dict):
        raise ValueError('this is an mmdet-sk SKNet state dict already (keys `dilated_convs`, '
                         '`fcs`): it needs no conversion, point `init_cfg` at it')
    units = sorted({m[1] for k in state_dict for m in [re.match(rf'^{_UNIT}\.paths\.', k)] if m})
    stages = _stage_blocks(state_dict)
    if not units:
        raise ValueError(
            f'not a timm SKNet: it has no Selective Kernel unit (keys like '
            f'`layer1.0.conv2.paths.0.conv.weight`); stage blocks {stages}, first keys '
            f'{list(state_dict)[:4]}. Convertible: {names}')
    sk_conv = {u.rsplit('.', 1)[1] for u in units}
    bottleneck = sk_conv == {'conv2'} and 'layer1.0.conv3.conv.weight' in state_dict
    basic = sk_conv == {'conv1'} and 'layer1.0.conv3.conv.weight' not in state_dict
    path0 = state_dict[f'{units[0]}.paths.0.conv.weight']  # the first SK unit's branch 0
    if basic and stages == (2, 2, 2, 2):
        found = 'skresnet18'
    elif basic and stages == (3, 4, 6, 3):
        found = 'skresnet34'
    elif bottleneck and stages == (3, 4, 6, 3) and path0.shape[0] == 128 \
            and path0.shape[1] == 4:  # width 128 in 32 groups of 4: no split input
        found = 'skresnext50_32x4d'
    else:
        kind = 'bottleneck' if bottleneck else 'basic' if basic else 'unknown'
        raise ValueError(
            f'a timm SK network of another architecture ({kind} blocks, stage blocks '
            f'{stages}, layer1.0 SK path conv {tuple(path0.shape)}): not one of the published '
            f'ImageNet SKNets ({names}); e.g. skresnet50/skresnet50d (split input, no groups) '
            f'have no published weights and no SKNet form here')
    if path0.shape[-1] != 3:
        raise ValueError(f'looks like {found} but its SK paths are not 3x3 (keep_3x3)')
    return found


def convert_timm_sknet(
    state_dict: Dict[str, Tensor]
) -> Tuple['OrderedDict[str, Tensor]', List[Tuple[str, int]], List[str]]:
    """Rename and reshape a timm SK-ResNet/SK-ResNeXt state dict into SKNet's.

    The mapping works on the structure (any width, depth or number of paths); which SKNet the
    result loads into is :data:`TIMM_SKNETS` [:func:`timm_sknet_arch`] for the published ones.

    Args:
        state_dict (dict[str, Tensor]): A timm ``skresnet*``/``skresnext*`` state dict.

    Returns:
        tuple: The converted state dict; ``(rule, count)`` for every mapping applied; the
        keys not converted (the classifier ``fc.*``, or anything unknown).
    """
    paths: Dict[str, int] = {}
    for key in state_dict:
        m = re.match(rf'^{_UNIT}\.paths\.(\d+)\.conv\.weight$', key)
        if m:
            paths[m[1]] = max(paths.get(m[1], 0), int(m[2]) + 1)
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    counts: Dict[str, int] = {}
    left: List[str] = []
    for key, tensor in state_dict.items():
        for pattern, shown, convert in _RULES:
            m = re.match(pattern, key)
            if m:
                out.update(convert(m, tensor, paths.get(m[1], 0)))
                counts[shown] = counts.get(shown, 0) + 1
                break
        else:
            left.append(key)
    rules = [(shown, counts[shown]) for _, shown, _ in _RULES if shown in counts]
    return out, rules, left


def read_state_dict(path: str) -> Dict[str, Tensor]:
    """Read a state dict as timm's hub files come: ``.safetensors``, or a torch ``.bin``/``.pth``.

    A torch file may hold the state dict itself or wrap it under ``state_dict``, ``model`` or
    ``state_dict_ema``. Torch files are read with ``weights_only=True`` (tensors only).

    Args:
        path (str): The file.

    Returns:
        dict[str, Tensor]: The state dict.
    """
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f'reading {path} needs the safetensors package: '
                              f'pip install safetensors') from e
        return dict(load_file(path, device='cpu'))
    import torch
    obj = torch.load(path, map_location='cpu', weights_only=True)
    for wrapper in ('state_dict', 'model', 'state_dict_ema'):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f'{path}: no state dict of tensors in it')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


def timm_sknet_to_mmdet(state_dict: Dict[str, Tensor],
                        arch: Optional[str] = None) -> Tuple[str, dict, tuple]:
    """Check the architecture and convert: what the converter tool does, without files.

    Args:
        state_dict (dict[str, Tensor]): A timm SKNet state dict.
        arch (str, optional): The expected architecture (a key of :data:`TIMM_SKNETS`);
            None accepts any of them.

    Returns:
        tuple: ``(arch, SKNet kwargs, convert_timm_sknet(state_dict))``.
    """
    if arch is not None and arch not in TIMM_SKNETS:
        raise ValueError(f'--arch must be one of {", ".join(TIMM_SKNETS)}, got {arch!r}')
    found = timm_sknet_arch(state_dict)
    if arch is not None and found != arch:
        raise ValueError(f'the checkpoint is a {found}, not the {arch} that --arch asks for')
    return found, TIMM_SKNETS[found], convert_timm_sknet(state_dict)
