# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Files of a scale analysis: the table of :func:`~mmdet_sk.analysis.scale_stats.summarize` and
its verdicts as CSV, JSON, PNG plots and text (``tools/analysis_tools/sk_scale_analysis.py``).
"""
import csv
import json
import os.path as osp
from collections import OrderedDict
from typing import Dict

import numpy as np

from .scale_stats import verdicts
from .sk_selection import SKGroup


def write_csv(path: str, table: dict, groups: Dict[str, SKGroup]) -> None:
    """One row per bucket, group, scale and branch (long format)."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['bucket', 'group', 'scale', 'num_images', 'branch', 'kernel',
                         'dilation', 'erf', 'is_large', 'weight'])
        for bucket, per_group in table.items():
            for name, per_scale in per_group.items():
                g = groups[name]
                for scale, (n, mean) in per_scale.items():
                    for i, value in enumerate(mean):
                        writer.writerow([bucket, name, f'{scale:g}', n, g.labels[i],
                                         g.kernels[i], g.dilations[i], g.erfs[i],
                                         int(i == g.large_index), f'{value:.6f}'])


def write_json(path: str, table: dict, groups: Dict[str, SKGroup], verdict_table: dict,
               meta: dict) -> None:
    """The table, the branch layout of each group, the verdicts and ``meta`` as strict JSON
    (an undefined correlation is written as null)."""
    data = dict(meta)
    data['groups'] = OrderedDict(
        (name, dict(modules=g.module_names, branches=[
            dict(label=lb, kernel=k, dilation=d, erf=e)
            for lb, k, d, e in zip(g.labels, g.kernels, g.dilations, g.erfs)
        ], large_branch=g.labels[g.large_index])) for name, g in groups.items()
        if any(name in per_group for per_group in table.values()))
    data['weights'] = OrderedDict(
        (bucket, OrderedDict((name, OrderedDict(
            (f'{scale:g}', dict(num_images=n, mean=[round(float(v), 6) for v in mean]))
            for scale, (n, mean) in per_scale.items())) for name, per_scale in per_group.items()))
        for bucket, per_group in table.items())
    data['verdicts'] = OrderedDict(
        (bucket, OrderedDict((name, {k: None if isinstance(v, float) and np.isnan(v) else v
                                     for k, v in verdict.items()})
                             for name, verdict in per_bucket.items()))
        for bucket, per_bucket in verdict_table.items())
    with open(path, 'w') as f:
        json.dump(data, f, indent=2, allow_nan=False)


def _min_span(ax, span: float = 0.02) -> None:
    """Show at least ``span`` of the y axis, so that tiny wiggles do not look like trends."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (hi + lo) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _grid(num: int, ncols: int = 4):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ncols = max(1, min(ncols, num))
    nrows = (num + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False, sharex=True)
    for ax in axes.flat[num:]:
        ax.axis('off')
    return plt, fig, axes.flat


def plot_weights(path: str, table: dict, groups: Dict[str, SKGroup], bucket: str = 'all',
                 title: str = '') -> None:
    """Mean weight of each branch versus input scale, one panel per group (SKNet, Fig. 3).

    Each y axis spans at least 0.02, so that a change of a few thousandths stays visibly small.
    """
    per_group = table[bucket]
    plt, fig, axes = _grid(len(per_group))
    for ax, (name, per_scale) in zip(axes, per_group.items()):
        g = groups[name]
        scales = list(per_scale)
        means = np.stack([per_scale[s][1] for s in scales])
        for i, label in enumerate(g.labels):
            ax.plot(scales, means[:, i], marker='o', lw=2 if i == g.large_index else 1,
                    label=f'{label} (RF {g.erfs[i]})')
        ax.set_title(name, fontsize=10)
        ax.set_xlabel('input scale')
        ax.set_ylabel('mean branch weight')
        _min_span(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or f'SK branch weights vs input scale ({bucket} images)', fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_large_by_bucket(path: str, table: dict, groups: Dict[str, SKGroup],
                         title: str = '') -> None:
    """Weight of the large branch versus input scale, one line per area bucket and panel per
    group."""
    names = list(table['all'])
    plt, fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        g = groups[name]
        k = g.large_index
        for bucket, per_group in table.items():
            per_scale = per_group.get(name)
            if not per_scale:
                continue
            scales = list(per_scale)
            n = next(iter(per_scale.values()))[0]
            ax.plot(scales, [per_scale[s][1][k] for s in scales], marker='o',
                    lw=2 if bucket == 'all' else 1, label=f'{bucket} ({n} img)')
        ax.set_title(f'{name}: {g.labels[k]}', fontsize=10)
        ax.set_xlabel('input scale')
        ax.set_ylabel('large-kernel weight')
        _min_span(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or 'Large-kernel weight vs input scale per GT area bucket', fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str, table: dict, groups: Dict[str, SKGroup], meta: dict,
                 tol: float = 1e-3) -> 'OrderedDict[str, dict]':
    """Write CSV, JSON, PNGs and verdicts of a scale analysis into ``out_dir``.

    Files: ``sk_scale_weights.csv``, ``sk_scale_weights.json``, ``sk_scale_weights.png``
    (all images), ``sk_scale_large_by_bucket.png`` and ``sk_scale_verdicts.txt``.

    Returns:
        OrderedDict[str, dict]: The verdicts on all images, per group.
    """
    verdict_table = OrderedDict((bucket, verdicts(table, groups, bucket, tol)) for bucket in table)
    write_csv(osp.join(out_dir, 'sk_scale_weights.csv'), table, groups)
    write_json(osp.join(out_dir, 'sk_scale_weights.json'), table, groups, verdict_table, meta)
    n = next(iter(next(iter(table['all'].values())).values()))[0]
    plot_weights(osp.join(out_dir, 'sk_scale_weights.png'), table, groups, 'all',
                 f'SK branch weights vs input scale ({n} images)')
    plot_large_by_bucket(osp.join(out_dir, 'sk_scale_large_by_bucket.png'), table, groups)
    with open(osp.join(out_dir, 'sk_scale_verdicts.txt'), 'w') as f:
        for bucket, per_bucket in verdict_table.items():
            f.write(f'# {bucket} images\n')
            for verdict in per_bucket.values():
                f.write(verdict['line'] + '\n')
    return verdict_table['all']
