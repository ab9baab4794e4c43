"""mmdet_sk.analysis.scale_stats: the statistics and verdicts of a scale analysis."""
import math
from collections import OrderedDict

import numpy as np
import pytest

from mmdet_sk.analysis import SKGroup, large_kernel_summary, summarize, verdicts


def _verdicts(large_weights: dict) -> 'OrderedDict[str, dict]':
    """Verdicts of one-image groups ``k3d1, k3d2`` whose k3d2 weight per scale is given."""
    scales = (0.5, 1.0, 2.0)
    groups = OrderedDict((name, SKGroup(name, (3, 3), (1, 2))) for name in large_weights)
    weights = OrderedDict(
        (s, OrderedDict((name, np.array([[1 - w[i], w[i]]]))
                        for name, w in large_weights.items())) for i, s in enumerate(scales))
    return verdicts(summarize(weights, {0: 'small'}, [0]), groups)


def test_large_kernel_summary_counts_rising_sites_and_their_change():
    table = _verdicts(OrderedDict([('backbone.layer2', (0.40, 0.42, 0.45)),
                                   ('backbone.layer3', (0.50, 0.49, 0.48)),
                                   ('neck.level1', (0.30, 0.32, 0.31))]))
    assert [v['rises'] for v in table.values()] == [True, False, True]
    summary = large_kernel_summary(table)
    assert summary['sites'] == 3 and summary['rising'] == 2
    assert summary['mean_change'] == pytest.approx((0.05 - 0.02 + 0.01) / 3)
    assert summary['max_change'] == pytest.approx(0.05)
    assert summary['line'] == ('2 of 3 sites rise; large-kernel weight change over the '
                               'scales: mean +0.013, max +0.050')


def test_large_kernel_summary_without_sites():
    summary = large_kernel_summary({})
    assert summary['sites'] == 0 and summary['rising'] == 0
    assert math.isnan(summary['mean_change']) and math.isnan(summary['max_change'])
    assert summary['line'].startswith('0 of 0 sites rise')
