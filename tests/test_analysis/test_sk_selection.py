"""mmdet_sk.analysis.sk_selection: collecting the SK weights of a detector at several scales."""
import numpy as np
from mmdet.registry import DATASETS
from mmengine.config import Config

from mmdet_sk.analysis import collect_scale_selection, sk_groups
from mmdet_sk.datasets import data_root_options
from sk_test_utils import build_detector

SKCONV_CONFIG = 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py'


def test_collect_scale_selection_of_an_skconv_detector(tiny_coco):
    cfg = Config.fromfile(SKCONV_CONFIG)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(tiny_coco)))
    model = build_detector(cfg)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    weights, buckets = collect_scale_selection(model, dataset,
                                               cfg.test_dataloader.dataset.pipeline,
                                               [0.5, 1.0], [0, 1], progress=False)
    assert list(weights) == [0.5, 1.0] and set(buckets) == {0, 1}
    for per_group in weights.values():
        assert list(per_group) == ['backbone.layer2', 'backbone.layer3', 'backbone.layer4']
        for w in per_group.values():
            assert w.shape == (2, 2)  # images x branches (k3d1, k3d2)
            np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
    assert any(not np.allclose(weights[0.5][g], weights[1.0][g]) for g in weights[0.5])
    groups = sk_groups(model)  # recording is off again and nothing is kept
    assert all(not m.record_selection and m.last_selection is None
               for g in groups.values() for m in g.modules)
