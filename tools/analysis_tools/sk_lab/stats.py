# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Statistics and decision rules of the seeded experiments (the SK study and the ablation).

Each rule is fixed in code before the results it judges: the study compares arm means
against the seed spread (:func:`spread_verdict`); the ablation compares arms seed by seed
(:func:`paired_difference`, :func:`paired_verdict`) and picks the shipped default with
:func:`choose_default`.
"""
import statistics
from typing import Dict, List, Optional, Sequence

#: Two-sided 10% critical values of Student's t (one-sided 5%) by degrees of freedom.
T_CRITICAL = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860,
              9: 1.833}
#: Smallest mAP difference that counts at all (MMDetection prints mAP to 3 decimals).
MIN_DIFF = 0.005


def summary(values: Sequence[float]) -> Optional[dict]:
    """Mean, sample std (0 for one value), count and the values; None for no values."""
    values = list(values)
    if not values:
        return None
    return dict(mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0, n=len(values),
                values=values)


def fmt(stats: Optional[dict], digits: int = 3) -> str:
    """``mean ± std (v1, v2, ...)``, or ``not run yet``."""
    if stats is None:
        return 'not run yet'
    seeds = ', '.join(f'{v:+.{digits}f}' if stats.get('signed') else f'{v:.{digits}f}'
                      for v in stats['values'])
    sign = '+' if stats.get('signed') else ''
    return f'{stats["mean"]:{sign}.{digits}f} ± {stats["std"]:.{digits}f} ({seeds})'


def spread_verdict(a: Optional[dict], b: Optional[dict], min_n: int = 3) -> Optional[str]:
    """The study's rule: a difference of means counts when it exceeds the larger of the two
    arms' seed standard deviations (and ``MIN_DIFF``); None until both have ``min_n`` seeds.
    """
    if not a or not b or a['n'] < min_n or b['n'] < min_n:
        return None
    diff = a['mean'] - b['mean']
    spread = max(a['std'], b['std'], MIN_DIFF)
    if abs(diff) <= spread:
        return 'no difference beyond the seed spread'
    return f'{"higher" if diff > 0 else "lower"} by more than the seed spread'


def paired_difference(a: Dict[int, float], b: Dict[int, float]) -> Optional[dict]:
    """``a[seed] - b[seed]`` over the seeds both have: a :func:`summary` plus ``seeds``,
    ``wins`` (seeds where ``a`` is higher), ``t`` (mean / standard error; None for one seed or
    no spread) and ``signed`` (for :func:`fmt`). None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    stats = summary([a[s] - b[s] for s in seeds])
    stats.update(seeds=seeds, wins=sum(a[s] > b[s] for s in seeds), signed=True)
    stats['t'] = (stats['mean'] / (stats['std'] / len(seeds)**0.5)
                  if len(seeds) > 1 and stats['std'] > 0 else None)
    return stats


def paired_verdict(diff: Optional[dict], min_n: int = 3) -> str:
    """The ablation's rule for one paired difference ``a - b`` (:func:`paired_difference`).

    ``'higher'`` / ``'lower'`` when, over at least ``min_n`` paired seeds, every seed's
    difference has the sign of the mean, ``|mean| >= MIN_DIFF``, and the paired t statistic
    reaches the one-sided 5% critical value (:data:`T_CRITICAL`); ``'no difference'`` when
    ``min_n`` seeds ran but that does not hold; ``'not all seeds yet'`` before.
    """
    if diff is None or diff['n'] < min_n:
        return 'not all seeds yet'
    n, mean, values = diff['n'], diff['mean'], diff['values']
    same_sign = all(v > 0 for v in values) if mean > 0 else all(v < 0 for v in values)
    strong = diff['t'] is None or abs(diff['t']) >= T_CRITICAL.get(n - 1, 1.8)
    if mean != 0 and same_sign and abs(mean) >= MIN_DIFF and strong:
        return 'higher' if mean > 0 else 'lower'
    return 'no difference'


def choose_default(vs_shipped: Dict[str, Optional[dict]], shipped: str,
                   min_n: int = 3) -> dict:
    """The ablation's rule for the shipped default.

    An arm replaces ``shipped`` when its paired difference to ``shipped``
    (``vs_shipped[arm]``) is ``'higher'`` by :func:`paired_verdict`; among several, the one
    with the largest mean difference. Otherwise ``shipped`` stays. Undecided while any arm has
    fewer than ``min_n`` paired seeds.

    Returns:
        dict: ``arm`` (the default, or None while undecided), ``decided`` (bool) and ``why``.
    """
    pending = [a for a, d in vs_shipped.items() if d is None or d['n'] < min_n]
    if pending:
        return dict(arm=None, decided=False,
                    why=f'not all seeds have run yet ({", ".join(pending)})')
    better: List[str] = [a for a, d in vs_shipped.items() if paired_verdict(d, min_n) ==
                         'higher']
    if not better:
        return dict(arm=shipped, decided=True,
                    why=f'no arm beats {shipped} in every paired seed by the rule; '
                    f'{shipped} stays')
    best = max(better, key=lambda a: vs_shipped[a]['mean'])
    return dict(arm=best, decided=True,
                why=f'{best} beats {shipped} by {vs_shipped[best]["mean"]:+.3f} mAP '
                f'(paired, {vs_shipped[best]["n"]} seeds, all higher)')
