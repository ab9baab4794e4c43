"""tools/analysis_tools/sk_lab/stats.py: the experiments' rules, on made-up numbers."""
import pytest

from sk_lab.stats import (choose_default, fmt, paired_difference, paired_verdict,
                          spread_verdict, summary)


def test_summary_and_fmt():
    s = summary([0.5, 0.52, 0.54])
    assert s['mean'] == pytest.approx(0.52) and s['std'] == pytest.approx(0.02) and s['n'] == 3
    assert fmt(s) == '0.520 ± 0.020 (0.500, 0.520, 0.540)'
    assert summary([]) is None and fmt(None) == 'not run yet'
    assert summary([0.3])['std'] == 0.0


def test_spread_verdict():
    a, b = summary([0.52, 0.53, 0.54]), summary([0.50, 0.51, 0.49])
    assert spread_verdict(a, b) == 'higher by more than the seed spread'
    assert spread_verdict(b, a) == 'lower by more than the seed spread'
    assert spread_verdict(summary([0.50, 0.53, 0.47]), b) == 'no difference beyond the seed spread'
    assert spread_verdict(summary([0.3]), b) is None


def test_paired_difference_pairs_by_seed():
    a = {0: 0.50, 1: 0.40, 2: 0.60, 3: 0.9}
    b = {2: 0.58, 0: 0.49, 1: 0.38}
    d = paired_difference(a, b)
    assert d['seeds'] == [0, 1, 2] and d['values'] == pytest.approx([0.01, 0.02, 0.02])
    assert d['wins'] == 3 and d['mean'] == pytest.approx(0.05 / 3)
    assert d['t'] == pytest.approx(d['mean'] / (d['std'] / 3**0.5))
    assert fmt(d) == '+0.017 ± 0.006 (+0.010, +0.020, +0.020)'
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


@pytest.mark.parametrize('values, verdict', [
    ([0.010, 0.012, 0.011], 'higher'),                # consistent, large t
    ([-0.010, -0.012, -0.011], 'lower'),
    ([0.010, 0.010, 0.010], 'higher'),                # no spread at all
    ([0.030, 0.001, 0.002], 'no difference'),         # same sign but t = 1.2 < 2.92
    ([0.020, 0.025, -0.001], 'no difference'),        # one seed disagrees
    ([0.002, 0.003, 0.002], 'no difference'),         # below 0.005 mAP
    ([0.02, 0.02], 'not all seeds yet'),
])
def test_paired_verdict(values, verdict):
    a = {s: 0.5 + v for s, v in enumerate(values)}
    b = {s: 0.5 for s in range(len(values))}
    assert paired_verdict(paired_difference(a, b)) == verdict


def test_choose_default():
    def diff(*values):
        return paired_difference({s: 0.5 + v for s, v in enumerate(values)},
                                 {s: 0.5 for s in range(len(values))})

    undecided = choose_default(dict(a=diff(0.01, 0.01, 0.01), b=diff(0.02, 0.02)), 'shipped')
    assert undecided['arm'] is None and not undecided['decided'] and 'b' in undecided['why']
    stays = choose_default(dict(a=diff(0.03, 0.001, 0.002), b=diff(-0.01, -0.01, -0.011)),
                           'shipped')
    assert stays['arm'] == 'shipped' and stays['decided']
    best = choose_default(dict(a=diff(0.010, 0.011, 0.012), b=diff(0.020, 0.021, 0.022),
                               c=diff(0.05, -0.01, 0.04)), 'shipped')
    assert best['arm'] == 'b' and '+0.021' in best['why']
