import os.path as osp

import pytest

import mmdet_sk  # noqa: F401  (registers modules, allow-lists checkpoint globals)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session', autouse=True)
def _mmdet_registry():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture(autouse=True)
def _mmdet_scope(_mmdet_registry):
    """Every test starts in mmdet's default scope, whatever an earlier test's Runner left
    current (a toy Runner with ``default_scope='mmengine'`` makes that scope current)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    """A tiny generated COCO-format set shared by the end-to-end tests."""
    from mmdet_sk.datasets import generate_coco_shapes
    root = tmp_path_factory.mktemp('tiny_coco')
    generate_coco_shapes(str(root), num_train=16, num_val=8, img_size=128, seed=3)
    return root
