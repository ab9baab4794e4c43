# Copyright (c) mmdet-sk contributors. All rights reserved.
"""How far each SK block moves its input: is an inserted SK block used at all?

A gated SK block (``gate=True``) starts as the identity; a block whose gate stays near zero
proves nothing. :func:`sk_output_change` measures, per SK site (backbone stage / neck level,
as :func:`~mmdet_sk.analysis.sk_selection.sk_groups` groups them), the relative change
``||out - x|| / ||x||`` of the blocks' outputs over a set of images.
"""
from collections import OrderedDict
from typing import Dict, Sequence

import torch
from torch import nn

from .sk_selection import sk_groups


def sk_output_change(model: nn.Module, dataset, indices: Sequence[int]) -> Dict[str, dict]:
    """Run ``model`` on images of ``dataset`` and measure each SK site's relative change.

    Each image runs alone through ``model.data_preprocessor`` and ``model.extract_feat``
    (backbone and neck: where the SK blocks are). For every site the squared norms are summed
    over its blocks and the images, so the value is ``sqrt(sum ||out - x||^2 / sum ||x||^2)``.

    Args:
        model (nn.Module): A detector in eval mode, its weights loaded.
        dataset (BaseDataset): The dataset, with its test pipeline.
        indices (Sequence[int]): Dataset indices of the images to use.

    Returns:
        dict[str, dict]: Per site: ``rel_change`` (the value above), ``blocks`` (how many)
        and, for gated blocks, ``gate_abs_mean`` (mean ``|s|`` over the site's channels).
    """
    from mmengine.dataset import pseudo_collate

    groups = sk_groups(model)
    if not groups:
        raise ValueError('sk_output_change: the model has no SKAttention module')
    sums = {name: [0.0, 0.0] for name in groups}

    def hook_for(site):
        def hook(module, args, out):
            x = args[0].float()
            sums[site][0] += float((out.float() - x).pow(2).sum())
            sums[site][1] += float(x.pow(2).sum())
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
