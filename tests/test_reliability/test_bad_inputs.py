"""Bad-input matrix: each mistake a user can make gives an error naming what to fix.

Model rows build the model from a config (``Config.fromfile`` + ``MODELS.build``), as the
Runner does; the rows MMDetection itself only ``assert``s are caught by the tools' preflight
(:mod:`mmdet_sk.utils.preflight`), tested here through the tool's own argument parser; the
data and checkpoint rows also run the real tools once each.
"""
import os.path as osp
import re
import shutil

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from mmdet_sk.datasets import data_root_options
from mmdet_sk.utils.checkpoint import check_checkpoint_fits, read_checkpoint
from mmdet_sk.utils.preflight import check_neck_levels, check_plugin_configs
from reliability_utils import DEMO_SK, REPO, run_preflight, tool

DEMO_PLAIN = osp.join(REPO, 'configs', 'demo', 'faster-rcnn_r18_fpn_shapes.py')
R50_SK = osp.join(REPO, 'configs', 'faster_rcnn_r50_sk_fpn.py')
YOLOX_SK = osp.join(REPO, 'configs', 'yolox_s_sk_8xb8-300e_coco.py')
RTMDET_SK = osp.join(REPO, 'configs', 'rtmdet_tiny_sk_8xb32-300e_coco.py')
SK = dict(type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=32, reduction=16, L=32)


def demo_cfg(config=DEMO_SK):
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # no ImageNet download
    return cfg


def build(cfg):
    return MODELS.build(cfg.model)


def backbone_sk(cfg, **changes):
    """Change the SK config of the demo backbone's (only) plugin."""
    cfg.model.backbone.plugins[0].cfg.update(changes)
    return cfg


def neck_sk(cfg, **changes):
    """Change the SK config of the demo's PluginNeck."""
    cfg.model.neck.plugin.update(changes)
    return cfg


# ---------------------------------------------------------------- model rows, built from config
def test_unknown_plugin_type_in_backbone():
    with pytest.raises(KeyError, match=r"plugin type 'SKAtention' is not registered.*"
                       r"custom_imports.*SKAttention"):
        build(backbone_sk(demo_cfg(), type='SKAtention'))


def test_unknown_plugin_type_in_neck():
    with pytest.raises(KeyError, match=r"LevelPlugins: plugin type 'SKNet' is not registered"):
        build(neck_sk(demo_cfg(), type='SKNet'))


def test_plugin_position_not_in_basic_block():
    cfg = demo_cfg()
    cfg.model.backbone.plugins[0].position = 'after_conv3'
    with pytest.raises(ValueError, match=r"ResNet-18: plugins\[0\].position='after_conv3' is "
                       r"not a position of this block; allowed: after_conv1, after_conv2"):
        build(cfg)


@pytest.mark.parametrize('config, backbone', [(YOLOX_SK, 'PluginCSPDarknet'),
                                              (RTMDET_SK, 'PluginCSPNeXt')])
def test_plugin_position_not_in_a_csp_backbone(config, backbone):
    cfg = demo_cfg(config)
    cfg.model.backbone.plugins[0].position = 'after_conv2'
    match = r"plugins\[0\].position='after_conv2' is not a position of this block; allowed: " \
        r"after_stage"
    with pytest.raises(ValueError, match=rf"model.backbone \(type='{backbone}'\): {match}"):
        check_plugin_configs(cfg.model)  # when the config is loaded
    with pytest.raises(ValueError, match=rf'{backbone}: {match}'):
        build(cfg)


@pytest.mark.parametrize('stages', [(True, True, True), (False, True, True, True, True)])
def test_stages_of_wrong_length(stages):
    cfg = demo_cfg()
    cfg.model.backbone.plugins[0].stages = stages
    with pytest.raises(ValueError, match=rf'stages={re.escape(str(stages))} has {len(stages)} '
                       r'entries; it needs one bool per stage \(4\)'):
        build(cfg)


def test_sk_on_a_neck_level_that_does_not_exist():
    cfg = demo_cfg()
    cfg.model.neck.levels = (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r'`levels`=\(1, 2, 3, 4, 5\) must be distinct indices '
                       r'in 0\.\.4 \(the neck returns 5 maps\)'):
        build(cfg)


def test_plugin_neck_levels_not_matching_the_neck():
    cfg = demo_cfg()
    cfg.model.neck.update(num_levels=4, levels=(0, 1, 2, 3))
    message = (r"`num_levels`=4, but the neck \(type='FPN'\) gives 5 by its `num_outs`; "
               r'set num_levels=5 or leave it unset')
    with pytest.raises(ValueError, match=r'model.neck: PluginNeck: ' + message):
        check_neck_levels(cfg.model)
    with pytest.raises(ValueError, match=message):
        build(cfg)
    cfg = demo_cfg()
    cfg.model.neck.in_channels = 256
    with pytest.raises(ValueError, match=r'`in_channels`=256, but .* gives 128 by its '
                       r'`out_channels`; set in_channels=128'):
        build(cfg)
    check_neck_levels(demo_cfg().model)


def test_level_plugins_in_a_neck_list_not_matching_the_neck():
    """MODELS.build cannot know what the neck of a list returns; the preflight compares the
    configs, and the first forward would say it too."""
    cfg = demo_cfg()
    fpn = cfg.model.neck.neck
    cfg.model.neck = [fpn, dict(type='LevelPlugins', in_channels=128, num_levels=4,
                                levels=(0, 1, 2, 3), plugin=SK)]
    with pytest.raises(ValueError, match=r"model.neck\[1\].num_levels=4, but model.neck\[0\] "
                       r"\(FPN\) returns num_outs=5 maps; set num_levels=5"):
        check_neck_levels(cfg.model)
    model = build(cfg)
    with pytest.raises(ValueError, match='built for 4 levels but the neck returned 5 maps'):
        model.extract_feat(torch.rand(1, 3, 64, 64))
    cfg.model.neck[1].update(num_levels=5, in_channels=256)
    with pytest.raises(ValueError, match=r'in_channels=256, but model.neck\[0\] \(FPN\) has '
                       r'out_channels=128; set in_channels=128'):
        check_neck_levels(cfg.model)


def test_sk_on_a_backbone_stage_that_does_not_exist():
    cfg = demo_cfg()
    cfg.model.backbone.num_stages = 3
    cfg.model.backbone.out_indices = (0, 1, 2)
    with pytest.raises(ValueError, match=r'has 4 entries; it needs one bool per stage \(3\)'):
        build(cfg)


@pytest.mark.parametrize('where', [backbone_sk, neck_sk])
def test_channels_not_divisible_by_groups(where):
    with pytest.raises(ValueError, match=r'`in_channels` \(128\) must be divisible by `groups` '
                       r'\(48\); allowed groups are divisors of 128'):
        build(where(demo_cfg(), groups=48))


@pytest.mark.parametrize('kernels', [(3, 4), (0, 3), (-3, 3)])
def test_even_or_non_positive_kernel(kernels):
    with pytest.raises(ValueError, match=r'`kernels` must be odd positive ints.*got '
                       + re.escape(str(kernels))):
        build(backbone_sk(demo_cfg(), kernels=kernels, dilations=None))


@pytest.mark.parametrize('field,value', [('reduction', 0), ('reduction', -4), ('L', 0)])
def test_reduction_or_L_out_of_range(field, value):
    with pytest.raises(ValueError, match=rf'`{field}` must be >= 1, got {value}'):
        build(neck_sk(demo_cfg(), **{field: value}))


# ------------------------- MMDetection's own ResNet: a bare AssertionError, caught by preflight
def resnet50_cfg(position='after_conv2', stages=(False, True, True, True), depth=50):
    cfg = demo_cfg(R50_SK)
    cfg.model.backbone.update(type='ResNet', depth=depth)
    cfg.model.backbone.plugins = [dict(cfg=SK, stages=stages, position=position)]
    return cfg


def test_mmdet_resnet_bad_position_is_a_bare_assertion():
    """What MMDetection gives: the reason the launcher checks the config first."""
    with pytest.raises(AssertionError, match=r'^$'):
        build(resnet50_cfg(position='after_conv4'))


def test_mmdet_resnet_bad_position_named_by_preflight():
    with pytest.raises(ValueError, match=r"model.backbone \(type='ResNet'\) depth=50: "
                       r"plugins\[0\].position='after_conv4' is not a position of this block; "
                       r'allowed: after_conv1, after_conv2, after_conv3'):
        check_plugin_configs(resnet50_cfg(position='after_conv4').model)


def test_mmdet_resnet_stages_and_type_named_by_preflight():
    with pytest.raises(ValueError, match=r'needs one bool per stage \(4\)'):
        check_plugin_configs(resnet50_cfg(stages=(True, True)).model)
    cfg = resnet50_cfg()
    cfg.model.backbone.plugins[0].cfg = dict(SK, type='SKAttn')
    with pytest.raises(KeyError, match=r"plugin type 'SKAttn' is not registered"):
        check_plugin_configs(cfg.model)


def test_mmdet_resnet18_with_plugins_points_to_plugin_resnet():
    with pytest.raises(ValueError, match=r"depth=18 builds BasicBlocks, which take no `plugins` "
                       r"in MMDetection; use type='PluginResNet'"):
        check_plugin_configs(resnet50_cfg(position='after_conv1', depth=18).model)


def test_good_configs_pass_preflight_model_checks():
    for config in (DEMO_SK, DEMO_PLAIN, R50_SK, YOLOX_SK):
        check_plugin_configs(demo_cfg(config).model)
        check_neck_levels(demo_cfg(config).model)
    check_plugin_configs(resnet50_cfg().model)


# ----------------------------------------- through the tools' preflight (their own parsers)
def test_train_preflight_rejects_mmdet_resnet_bad_position(monkeypatch, tiny_coco):
    with pytest.raises(ValueError, match=r"position='after_conv4'.*allowed: after_conv1"):
        run_preflight(monkeypatch, 'train.py', R50_SK, '--cfg-options',
                      'model.backbone.type=ResNet',
                      'model.backbone.plugins.0.position=after_conv4',
                      *data_root_options(tiny_coco))


def test_missing_annotation_file_names_path_and_how_to_generate(monkeypatch, tmp_path):
    root = tmp_path / 'coco_shapes'
    with pytest.raises(FileNotFoundError) as err:
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--cfg-options', *data_root_options(root))
    message = str(err.value)
    assert message.startswith(f'train_dataloader.dataset.ann_file: {root}/annotations/'
                              f'instances_train2017.json does not exist')
    assert f'python tools/misc/generate_demo_data.py --out-dir {root}' in message


def test_missing_image_folder(monkeypatch, tiny_coco, tmp_path):
    root = tmp_path / 'coco'
    shutil.copytree(tiny_coco / 'annotations', root / 'annotations')
    shutil.copytree(tiny_coco / 'train2017', root / 'train2017')
    with pytest.raises(FileNotFoundError) as err:  # val2017/ is missing
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--cfg-options', *data_root_options(root))
    message = str(err.value)
    assert message.startswith(f'val_dataloader.dataset.data_prefix.img: {root}/val2017/ does '
                              f'not exist')
    assert 'https://cocodataset.org/#download' in message and 'download_dataset.py' in message


def test_missing_evaluator_annotation(monkeypatch, tiny_coco):
    with pytest.raises(FileNotFoundError, match=r'val_evaluator.ann_file: /nowhere/ann.json '
                       r'does not exist'):
        run_preflight(monkeypatch, 'train.py', DEMO_SK, '--cfg-options',
                      *data_root_options(tiny_coco), 'val_evaluator.ann_file=/nowhere/ann.json')


def test_train_tool_stops_on_missing_data_before_building(tmp_path):
    out = tool('train.py', DEMO_SK, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               *data_root_options(tmp_path / 'coco_shapes'), expect_rc=1)
    assert 'FileNotFoundError: train_dataloader.dataset.ann_file:' in out
    assert 'generate_demo_data.py' in out
    assert 'Iter(train)' not in out and not (tmp_path / 'work').exists()


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope='module')
def plain_checkpoint(tmp_path_factory):
    """A checkpoint of the demo detector *without* SK, in MMEngine's layout."""
    torch.manual_seed(0)
    model = build(demo_cfg(DEMO_PLAIN))
    path = tmp_path_factory.mktemp('ckpt') / 'plain.pth'
    torch.save(dict(meta=dict(iter=1), state_dict=model.state_dict()), path)
    return path


@pytest.mark.parametrize('keep', [0, 1000, 0.5])
def test_truncated_checkpoint_is_named(plain_checkpoint, tmp_path, keep):
    data = plain_checkpoint.read_bytes()
    bad = tmp_path / 'iter_8.pth'
    bad.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(RuntimeError, match=rf'Checkpoint {re.escape(str(bad))} \(\d+ bytes\) '
                       r'cannot be read .*truncated or corrupt'):
        read_checkpoint(str(bad))


def test_corrupt_checkpoint_is_named(plain_checkpoint, tmp_path):
    data = bytearray(plain_checkpoint.read_bytes())
    data[:64] = b'\0' * 64
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r'corrupt\.pth .* cannot be read'):
        read_checkpoint(str(bad))


def test_missing_checkpoint_lists_the_others(plain_checkpoint):
    missing = plain_checkpoint.parent / 'iter_9.pth'
    with pytest.raises(FileNotFoundError, match=r'iter_9.pth does not exist. Other checkpoints '
                       r'in .*: plain.pth'):
        read_checkpoint(str(missing))


@pytest.mark.parametrize('how', ['load_from', '--resume PATH'])
def test_truncated_load_from_or_resume_stops_train(monkeypatch, plain_checkpoint, tiny_coco,
                                                   tmp_path, how):
    bad = tmp_path / 'half.pth'
    bad.write_bytes(plain_checkpoint.read_bytes()[:5000])
    argv = ['--resume', str(bad)] if how == '--resume PATH' else []
    options = [f'load_from={bad}'] if how == 'load_from' else []
    with pytest.raises(RuntimeError, match=r'half.pth \(5000 bytes\) cannot be read'):
        run_preflight(monkeypatch, 'train.py', DEMO_SK, *argv, '--cfg-options', *options,
                      *data_root_options(tiny_coco))


def test_auto_resume_with_broken_last_checkpoint(monkeypatch, plain_checkpoint, tiny_coco,
                                                 tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copy(plain_checkpoint, work / 'iter_2.pth')
    argv = ['train.py', DEMO_SK, '--work-dir', str(work), '--resume', '--cfg-options',
            *data_root_options(tiny_coco)]
    (work / 'last_checkpoint').write_text('')
    with pytest.raises(RuntimeError, match=r'last_checkpoint is empty.*--resume PATH.*iter_2.pth'):
        run_preflight(monkeypatch, *argv)
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    with pytest.raises(FileNotFoundError, match=r'--resume resumes from .*iter_4.pth, named by '
                       r'.*last_checkpoint: Checkpoint .*iter_4.pth does not exist. Other '
                       r'checkpoints in .*: iter_2.pth'):
        run_preflight(monkeypatch, *argv)
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    run_preflight(monkeypatch, *argv)  # a complete checkpoint: no error


def test_checkpoint_of_another_architecture_lists_keys(plain_checkpoint):
    cfg = demo_cfg()
    # SK on the FPN as a neck list: the FPN's weights are renamed neck.0.*
    cfg.model.neck = [cfg.model.neck.neck, dict(type='LevelPlugins', in_channels=128,
                                                num_levels=5, levels=(1, 2, 3, 4), plugin=SK)]
    with torch.device('meta'):
        model = build(cfg)
    with pytest.raises(ValueError) as err:
        check_checkpoint_fits(model, read_checkpoint(str(plain_checkpoint)),
                              str(plain_checkpoint))
    message = str(err.value)
    assert 'does not fit the model' in message
    assert re.search(r'Missing from the checkpoint \(\d+\): neck\.0\.lateral_convs', message)
    assert re.search(r'In the checkpoint but not in the model \(\d+\): neck\.lateral_convs',
                     message)


def test_plain_checkpoint_fits_the_sk_detector(plain_checkpoint):
    """SK blocks absent from a checkpoint keep their initialisation: not a mismatch."""
    with torch.device('meta'):
        model = build(demo_cfg())
    check_checkpoint_fits(model, read_checkpoint(str(plain_checkpoint)), 'plain.pth')


def test_shape_mismatch_is_listed(plain_checkpoint):
    cfg = demo_cfg(DEMO_PLAIN)
    cfg.model.roi_head.bbox_head.num_classes = 7
    with torch.device('meta'):
        model = build(cfg)
    with pytest.raises(ValueError, match=r'Shape mismatch \(\d\): roi_head.bbox_head.fc_cls.'
                       r'weight \(6, 256\) vs \(8, 256\) in the model'):
        check_checkpoint_fits(model, read_checkpoint(str(plain_checkpoint)),
                              str(plain_checkpoint))


def test_same_architecture_fits(plain_checkpoint):
    with torch.device('meta'):
        model = build(demo_cfg(DEMO_PLAIN))
    check_checkpoint_fits(model, read_checkpoint(str(plain_checkpoint)), 'plain.pth')


def test_test_tool_names_truncated_and_foreign_checkpoints(plain_checkpoint, tiny_coco,
                                                           tmp_path):
    opts = ['--work-dir', str(tmp_path), '--cfg-options', *data_root_options(tiny_coco)]
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(plain_checkpoint.read_bytes()[:100000])
    out = tool('test.py', DEMO_SK, str(bad), *opts, expect_rc=1)
    assert f'RuntimeError: Checkpoint {bad} (100000 bytes) cannot be read' in out
    # A ResNet-34 detector: the ResNet-18 checkpoint lacks the extra blocks' weights.
    out = tool('test.py', DEMO_PLAIN, str(plain_checkpoint), *opts, 'model.backbone.depth=34',
               expect_rc=1)
    assert f'ValueError: Checkpoint {plain_checkpoint} does not fit the model' in out
    assert 'Missing from the checkpoint' in out and 'Iter(test)' not in out
