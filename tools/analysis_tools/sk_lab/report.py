# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Report files of the seeded experiments: Markdown tables, JSON, seed-by-seed plots."""
import json
import os
import textwrap
from typing import List, Optional, Sequence, Tuple


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A Markdown table as lines; ``|`` inside a cell is escaped."""
    def row(cells):
        return '| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |'

    return [row(header), '|' + ' --- |' * len(header)] + [row(r) for r in rows]


def write_text(path: str, lines: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)


def seed_plot(path: str, panels: Sequence[Tuple[str, str, Sequence[Tuple[str, dict]]]],
              title: str, zero_line: Optional[Sequence[bool]] = None) -> None:
    """One panel per ``(title, ylabel, [(label, stats), ...])``: each arm's mean ± std as an
    error bar and every seed's value as a cross; ``stats`` from
    :func:`sk_lab.stats.summary` (None: the arm is left out)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for i, (ax, (panel_title, ylabel, entries)) in enumerate(zip(axes[0], panels)):
        shown = [(label, s) for label, s in entries if s]
        for x, (_, stats) in enumerate(shown):
            ax.errorbar(x, stats['mean'], yerr=stats['std'], fmt='o', capsize=6, color='C0')
            ax.scatter([x] * len(stats['values']), stats['values'], marker='x', color='C1',
                       zorder=3)
        if zero_line and zero_line[i]:
            ax.axhline(0, color='0.5', lw=0.8)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([textwrap.fill(label, 12) for label, _ in shown], fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=9)
        ax.grid(axis='y', alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
