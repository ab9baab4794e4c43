"""tools/deployment/deploy.py on bad input: each mistake is named, with status 2, before any
model is built or traced (in every environment: these checks need no mmdeploy). The export
itself: tests/test_deployment/test_mmdeploy_export.py (the deploy stack)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdet_sk.utils import deploy as sk_deploy
from sk_test_utils import load_script

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_SK = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_sk_fpn_shapes.py')
STATIC = osp.join(REPO, 'configs', 'deploy', 'detection_onnxruntime_static.py')
HAS_MMDEPLOY = importlib.util.find_spec('mmdeploy') is not None


def load_tool():
    return load_script('tools', 'deployment', 'deploy.py')


@pytest.fixture
def tool(monkeypatch):
    """The tool, its model building replaced by a failure: a check that comes too late fails
    the test."""
    module = load_tool()

    def too_late(*args, **kwargs):
        raise AssertionError('the tool went on to build the model')

    monkeypatch.setattr(module.sk_deploy, 'build_task_processor', too_late)
    return module


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """An image, the SK demo's checkpoint (random weights) and one of the same detector for
    COCO's 80 classes."""
    import cv2
    import numpy as np
    from mmdet.registry import MODELS
    root = tmp_path_factory.mktemp('deploy_inputs')
    img = str(root / 'img.png')
    cv2.imwrite(img, np.random.RandomState(0).randint(0, 256, (96, 128, 3), dtype=np.uint8))
    cfg = Config.fromfile(DEMO_SK)
    checkpoint = str(root / 'demo_sk.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), checkpoint)
    cfg.model.roi_head.bbox_head.num_classes = 80
    coco = str(root / 'coco.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), coco)
    return dict(img=img, checkpoint=checkpoint, coco=coco)


def run(tool, capsys, deploy_cfg, model_cfg, checkpoint, img, tmp_path):
    rc = tool.main([deploy_cfg, model_cfg, checkpoint, img, '--work-dir', str(tmp_path / 'wd'),
                    '--device', 'cpu'])
    assert not osp.exists(tmp_path / 'wd' / 'end2end.onnx')
    return rc, capsys.readouterr().err


def test_model_config_without_custom_imports(tool, files, capsys, tmp_path):
    config = tmp_path / 'sknet_retinanet.py'
    config.write_text("_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'\n"
                      "model = dict(backbone=dict(type='SKNet', depth=18, init_cfg=None))\n")
    rc, err = run(tool, capsys, STATIC, str(config), files['checkpoint'], files['img'],
                  tmp_path)
    assert rc == 2
    assert ('sknet_retinanet.py uses types of mmdet_sk (SKNet) but there is no custom_imports'
            in err and "custom_imports = dict(imports=['mmdet_sk']" in err)


def test_checkpoint_that_does_not_fit(tool, files, capsys, tmp_path):
    rc, err = run(tool, capsys, STATIC, DEMO_SK, files['coco'], files['img'], tmp_path)
    assert rc == 2
    assert 'coco.pth does not fit the model: 4 of the model\'s' in err
    assert 'roi_head.bbox_head.fc_cls.weight (81, 256) vs (6, 256)' in err


def test_unreadable_checkpoint(tool, files, capsys, tmp_path):
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(open(files['checkpoint'], 'rb').read()[:1000])
    rc, err = run(tool, capsys, STATIC, DEMO_SK, str(broken), files['img'], tmp_path)
    assert rc == 2 and 'broken.pth (1000 bytes) cannot be read' in err


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None,
                    reason='tensorrt is installed here')
def test_deploy_config_for_a_backend_not_installed(tool, files, capsys, tmp_path):
    deploy_cfg = tmp_path / 'detection_tensorrt_static-320x320.py'
    base = osp.join(REPO, 'configs', 'deploy', '_base_', 'base_static.py')
    deploy_cfg.write_text(f"_base_ = [{base!r}]\n"
                          "onnx_config = dict(input_shape=(320, 320))\n"
                          "backend_config = dict(type='tensorrt')\n")
    rc, err = run(tool, capsys, str(deploy_cfg), DEMO_SK, files['checkpoint'], files['img'],
                  tmp_path)
    assert rc == 2
    assert ("deploys to tensorrt (backend_config.type='tensorrt'), whose Python package "
            "'tensorrt' is not installed" in err)


def test_checkpoint_without_sk_weights_is_named(files, capsys, tmp_path):
    """A checkpoint of the plain demo detector for the SK demo config loads (gated SK starts
    as the identity), but the tool says that SK then computes nothing."""
    from mmdet.registry import MODELS
    plain = str(tmp_path / 'plain.pth')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_fpn_shapes.py'))
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), plain)
    args = load_tool().parse_args([STATIC, DEMO_SK, plain, files['img']])
    try:
        load_tool().check_inputs(args)
    except ImportError as e:  # no mmdeploy: the last check
        assert 'mmdeploy is not installed' in str(e)
    err = capsys.readouterr().err
    assert 'plain.pth:' in err and 'new in 10 SK blocks keep their initialisation' in err
    assert 'pays for SK without using it' in err


def test_missing_image(tool, files, capsys, tmp_path):
    rc, err = run(tool, capsys, STATIC, DEMO_SK, files['checkpoint'], str(tmp_path / 'no.jpg'),
                  tmp_path)
    assert rc == 2 and 'image' in err and 'no.jpg does not exist' in err


@pytest.mark.skipif(HAS_MMDEPLOY, reason='mmdeploy is installed here (the deploy stack)')
def test_without_mmdeploy(tool, files, capsys, tmp_path):
    rc, err = run(tool, capsys, STATIC, DEMO_SK, files['checkpoint'], files['img'], tmp_path)
    assert rc == 2 and 'mmdeploy is not installed' in err and '`make deploy`' in err


def test_checks_pass_on_good_input(files):
    """What the tool checks before it builds anything accepts the shipped SK demo, its
    checkpoint and the shipped deploy config (tested end to end in the deploy stack)."""
    args = load_tool().parse_args([STATIC, DEMO_SK, files['checkpoint'], files['img']])
    if not HAS_MMDEPLOY:
        with pytest.raises(ImportError, match='mmdeploy is not installed'):
            load_tool().check_inputs(args)
        sk_deploy.check_deploy_config(Config.fromfile(STATIC), STATIC, ('onnxruntime', ))
        sk_deploy.check_custom_imports(Config.fromfile(DEMO_SK), DEMO_SK)
        sk_deploy.check_checkpoint_for_config(Config.fromfile(DEMO_SK), files['checkpoint'])
    else:
        deploy_cfg, model_cfg = load_tool().check_inputs(args)
        assert deploy_cfg.backend_config.type == 'onnxruntime'
