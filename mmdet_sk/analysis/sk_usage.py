# Copyright (c) mmdet-sk contributors. All rights reserved.
"""How far each SK module moves what it replaced: is an inserted SK module used at all?

A gated SK module (``gate=True``) starts as what it replaced; a module whose gate stays near
zero proves nothing. :func:`sk_output_change` measures, per SK site (backbone stage / neck
level, as :func:`~mmdet_sk.analysis.sk_selection.sk_groups` groups them), the relative change
of the modules' outputs from their reference over a set of images. The reference is what the
module computes at insertion with ``gate=True``:

* :class:`SKAttention` (a block after a layer, the identity at insertion): its input ``x``,
  the change is ``||out - x|| / ||x||``;
* :class:`SKConv` (a unit in a conv slot, the replaced conv at insertion): ``module.conv(x)``,
  the replaced plain convolution (branch 0's conv, before its norm), the change is
  ``||out - conv(x)|| / ||conv(x)||``.
"""
from collections import OrderedDict
from typing import Dict, Sequence

import torch
from torch import Tensor, nn

from ..models.layers import SKConv
from .sk_selection import sk_groups


def sk_reference(module: nn.Module, x: Tensor) -> Tensor:
    """What the SK module computes at insertion (gate 0) on its input ``x``.

    Args:
        module (nn.Module): An :class:`SKAttention` or :class:`SKConv`.
        x (Tensor): The module's input (B, C, H, W).

    Returns:
        Tensor: ``module.conv(x)`` (the replaced conv) for an SKConv, ``x`` for an
        SKAttention.
    """
    return module.conv(x) if isinstance(module, SKConv) else x


def sk_output_change(model: nn.Module, dataset, indices: Sequence[int]) -> Dict[str, dict]:
    """Run ``model`` on images of ``dataset`` and measure each SK site's relative change.

    Each image runs alone through ``model.data_preprocessor`` and ``model.extract_feat``
    (backbone and neck: where the SK modules are). For every site the squared norms are summed
    over its modules and the images, so the value is ``sqrt(sum ||out - r||^2 / sum ||r||^2)``
    with ``r`` the module's reference (:func:`sk_reference`): its input ``x`` for an
    SKAttention, the replaced conv's output ``conv(x)`` for an SKConv. A freshly built gated
    model gives 0.0 at every site.

    Args:
        model (nn.Module): A detector in eval mode, its weights loaded.
        dataset (BaseDataset): The dataset, with its test pipeline.
        indices (Sequence[int]): Dataset indices of the images to use.

    Returns:
        dict[str, dict]: Per site: ``rel_change`` (the value above), ``blocks`` (how many
        modules) and, for gated modules, ``gate_abs_mean`` (mean ``|s|`` over the site's
        channels).
    """
    from mmengine.dataset import pseudo_collate

    groups = sk_groups(model)
    if not groups:
        raise ValueError('sk_output_change: the model has no SK module (SKAttention or '
                         'SKConv)')
    sums = {name: [0.0, 0.0] for name in groups}

    def hook_for(site):
        def hook(module, args, out):
            ref = sk_reference(module, args[0]).float()
            sums[site][0] += float((out.float() - ref).pow(2).sum())
            sums[site][1] += float(ref.pow(2).sum())
        return hook

    handles = [m.register_forward_hook(hook_for(site))
               for site, group in groups.items() for m in group.modules]
    try:
        with torch.no_grad():
            for idx in indices:
                data = model.data_preprocessor(pseudo_collate([dataset[idx]]), False)
                model.extract_feat(data['inputs'])
    finally:
        for handle in handles:
            handle.remove()
    result = OrderedDict()
    for site, group in groups.items():
        diff, ref = sums[site]
        entry = dict(rel_change=(diff / ref) ** 0.5 if ref > 0 else float('nan'),
                     blocks=len(group.modules))
        gates = [m.gate for m in group.modules if m.gate is not None]
        if gates:
            entry['gate_abs_mean'] = float(torch.cat([g.detach().abs() for g in gates]).mean())
        result[site] = entry
    return result
