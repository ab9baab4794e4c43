"""mmdet_sk.utils.deploy without mmdeploy: the checks that run before an export, and the
matching of two detectors' detections (the export itself: tests/test_deployment/)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmdet_sk.utils import deploy as sk_deploy

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_SK = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_sk_fpn_shapes.py')
DEPLOY = osp.join(REPO, 'configs', 'deploy')
HAS_MMDEPLOY = importlib.util.find_spec('mmdeploy') is not None
HAS_TENSORRT = importlib.util.find_spec('tensorrt') is not None


def without_custom_imports(tmp_path) -> str:
    """A model config that uses SKNet (mmdet_sk's) and imports nothing."""
    path = tmp_path / 'sknet_no_imports.py'
    path.write_text("_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'\n"
                    "model = dict(backbone=dict(type='SKNet', depth=18, init_cfg=None))\n")
    return str(path)


def deploy_config_for(tmp_path, backend: str) -> str:
    path = tmp_path / f'detection_{backend}_static.py'
    path.write_text(f"_base_ = [{osp.join(DEPLOY, '_base_', 'base_static.py')!r}]\n"
                    f"backend_config = dict(type={backend!r})\n")
    return str(path)


# ------------------------------------------------------------------------- custom_imports
def test_sk_types_in_a_config():
    used = sk_deploy.sk_types_in(Config.fromfile(DEMO_SK))
    assert {'SKAttention', 'PluginResNet', 'PluginNeck', 'AtomicCheckpointHook'} <= set(used)
    assert sk_deploy.sk_types_in(Config.fromfile(
        osp.join(REPO, 'configs', 'faster_rcnn_x50_fpn.py'))) == []


def test_config_without_custom_imports_is_refused(tmp_path):
    path = without_custom_imports(tmp_path)
    with pytest.raises(ValueError, match=r"sknet_no_imports.py uses types of mmdet_sk \(SKNet\) "
                       r"but there is no custom_imports.*Add `custom_imports = dict\(imports="
                       r"\['mmdet_sk'\]"):
        sk_deploy.check_custom_imports(Config.fromfile(path), path)


def test_configs_with_custom_imports_or_without_sk_pass():
    for path in (DEMO_SK, osp.join(REPO, 'configs', 'faster_rcnn_x50_fpn.py')):
        sk_deploy.check_custom_imports(Config.fromfile(path), path)


# ------------------------------------------------------------------------- deploy configs
@pytest.mark.parametrize('name', ['detection_onnxruntime_static.py',
                                  'detection_onnxruntime_dynamic.py',
                                  'instance-seg_onnxruntime_static.py',
                                  'instance-seg_onnxruntime_dynamic.py'])
def test_shipped_deploy_configs(name):
    cfg = Config.fromfile(osp.join(DEPLOY, name))
    assert sk_deploy.check_deploy_config(cfg, name, backends=('onnxruntime', )) == 'onnxruntime'
    assert cfg.onnx_config.save_file == 'end2end.onnx'
    assert cfg.onnx_config.output_names[:2] == ['dets', 'labels']
    assert ('masks' in cfg.onnx_config.output_names) == name.startswith('instance-seg')
    dynamic = cfg.onnx_config.get('dynamic_axes')
    assert (dynamic is not None) == name.endswith('dynamic.py')
    if dynamic:
        assert set(dynamic) == set(cfg.onnx_config.input_names + cfg.onnx_config.output_names)


@pytest.mark.skipif(HAS_TENSORRT, reason='tensorrt is installed here')
def test_backend_not_installed_is_named(tmp_path):
    path = deploy_config_for(tmp_path, 'tensorrt')
    with pytest.raises(ImportError, match=r"deploys to tensorrt \(backend_config.type="
                       r"'tensorrt'\), whose Python package 'tensorrt' is not installed"):
        sk_deploy.check_deploy_config(Config.fromfile(path), path)


def test_backend_the_caller_cannot_run(tmp_path):
    path = deploy_config_for(tmp_path, 'torchscript')  # torch: installed everywhere
    with pytest.raises(ValueError, match='deploys to torchscript; this tool exports and runs '
                       'onnxruntime only'):
        sk_deploy.check_deploy_config(Config.fromfile(path), path, backends=('onnxruntime', ))


def test_not_a_deploy_config():
    with pytest.raises(ValueError, match='is not an MMDeploy deploy config'):
        sk_deploy.check_deploy_config(Config.fromfile(DEMO_SK), DEMO_SK)


def test_unknown_backend(tmp_path):
    path = deploy_config_for(tmp_path, 'onnx-runtime')
    with pytest.raises(ValueError, match=r"backend_config.type='onnx-runtime' is not an "
                       r"MMDeploy backend; known: .*onnxruntime"):
        sk_deploy.check_deploy_config(Config.fromfile(path), path)


@pytest.mark.skipif(HAS_MMDEPLOY, reason='mmdeploy is installed here (the deploy stack)')
def test_missing_mmdeploy_says_how_to_get_it():
    with pytest.raises(ImportError, match=r'mmdeploy is not installed .*`make deploy` builds '
                       r'.venv-deploy/'):
        sk_deploy.check_mmdeploy('onnxruntime')


@pytest.mark.skipif(not HAS_MMDEPLOY, reason='needs mmdeploy (make deploy: the deploy stack)')
def test_mmdeploy_and_its_onnxruntime_ops_are_found():
    sk_deploy.check_mmdeploy('onnxruntime')


# ------------------------------------------------------------------------- checkpoints
def test_checkpoint_of_another_model_is_refused(tmp_path):
    """A checkpoint of the demo detector trained for COCO's 80 classes, for the 5-class demo."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(DEMO_SK)
    cfg.model.roi_head.bbox_head.num_classes = 80
    path = str(tmp_path / 'coco.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), path)
    sk_deploy.check_checkpoint_for_config(cfg, path)  # its own model: fits
    with pytest.raises(ValueError, match=r"coco.pth does not fit the model: 4 of the model's "
                       r"\d+ weights would not come from it. Shape mismatch \(4\): "
                       r"roi_head.bbox_head.fc_cls.weight \(81, 256\) vs \(6, 256\)"):
        sk_deploy.check_checkpoint_for_config(Config.fromfile(DEMO_SK), path)


# ------------------------------------------------------------------------- matching
def instances(boxes, scores, labels, masks=None) -> InstanceData:
    data = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                        scores=torch.tensor(scores), labels=torch.tensor(labels))
    if masks is not None:
        data.masks = masks
    return data


def test_match_detections():
    ref = instances([[0, 0, 10, 10], [20, 20, 30, 40], [50, 50, 60, 60], [0, 0, 5, 5]],
                    [0.9, 0.8, 0.7, 0.1], [1, 2, 3, 1])
    # the first box shifted by 1 (IoU 90 / 110), the second exact, the third with another
    # label, in another order
    cand = instances([[50, 50, 60, 60], [20, 20, 30, 40], [1, 0, 11, 10]],
                     [0.69, 0.81, 0.85], [4, 2, 1])
    matches = sk_deploy.match_detections(ref, cand, top_k=3)
    assert [m['rank'] for m in matches] == [0, 1, 2]
    assert matches[0]['index'] == 2 and matches[0]['iou'] == pytest.approx(90 / 110)
    assert matches[0]['score_diff'] == pytest.approx(0.85 - 0.9)
    assert matches[1]['index'] == 1 and matches[1]['iou'] == pytest.approx(1.0)
    assert matches[2]['index'] is None and matches[2]['score_diff'] is None
    assert sk_deploy.matches_summary(matches) == dict(
        matched=2, total=3, min_iou=pytest.approx(90 / 110),
        max_score_diff=pytest.approx(0.05), min_mask_iou=None)
    # above the IoU threshold only; each candidate taken once
    assert sk_deploy.match_detections(ref, cand, top_k=1, iou_thr=0.9)[0]['index'] is None
    twice = instances([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])
    one = instances([[0, 0, 10, 10]], [0.9], [1])
    assert [m['index'] for m in sk_deploy.match_detections(twice, one)] == [0, None]
    assert sk_deploy.match_detections(one, instances(torch.zeros(0, 4), [], []))[0]['iou'] == 0


def test_match_detections_with_masks():
    a = torch.zeros(2, 8, 8, dtype=torch.bool)
    a[0, :4, :4] = True
    a[1, 4:, 4:] = True
    b = a.clone()
    b[0, :4, :2] = False  # half of the first mask
    ref = instances([[0, 0, 4, 4], [4, 4, 8, 8]], [0.9, 0.8], [0, 0], a)
    cand = instances([[0, 0, 4, 4], [4, 4, 8, 8]], [0.9, 0.8], [0, 0], b)
    matches = sk_deploy.match_detections(ref, cand)
    assert [m['mask_iou'] for m in matches] == [0.5, 1.0]
    assert sk_deploy.matches_summary(matches)['min_mask_iou'] == 0.5
