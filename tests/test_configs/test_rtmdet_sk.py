"""RTMDet with SK as a user fine-tunes it: a trained RTMDet-tiny's checkpoint (``load_from``; here
one of the demo's 5 classes, its weights trained-like) into the SK config, an epoch on the demo
data and its validation through ``tools/train.py``."""
import os.path as osp
import subprocess
import sys

import torch
from mmdet.registry import MODELS
from mmengine.hub import get_config

from mmdet_sk.datasets import CLASSES
from sk_test_utils import with_running_stats

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'rtmdet_tiny_sk_8xb32-300e_coco.py')

# The SK config on the generated set at 128 px, 4 images a batch: one epoch is 4 iterations.
DEMO_DELTA = """
_base_ = {config!r}
load_from = {checkpoint!r}
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes={num_classes}))
data_root = {root!r}
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes={classes!r}),
               pipeline=pipeline)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(_delete_=True, ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True),
                 **dataset))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True, **dataset))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
"""


def test_fine_tunes_from_an_rtmdet_checkpoint(tiny_coco, tmp_path):
    cfg = get_config('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = len(CLASSES)
    torch.manual_seed(0)
    plain = MODELS.build(cfg.model)
    plain.init_weights()
    plain = with_running_stats(plain, gates=False)
    checkpoint = tmp_path / 'rtmdet_tiny.pth'
    torch.save(dict(state_dict=plain.state_dict(), meta=dict()), checkpoint)
    config = tmp_path / 'rtmdet_tiny_sk_shapes.py'
    config.write_text(DEMO_DELTA.format(config=CONFIG, checkpoint=str(checkpoint),
                                        root=str(tiny_coco).rstrip('/') + '/',
                                        classes=CLASSES, num_classes=len(CLASSES)))
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, 'tools/train.py', str(config), '--work-dir',
                           str(work)], cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f'Load checkpoint from {checkpoint}' in out
    # Every RTMDet weight from the checkpoint; only SK's own are new (and start as the identity).
    assert 'new in 6 SK blocks keep their initialisation (gate=True' in out
    assert 'other tensors are missing' not in out
    assert 'unexpected key in source state_dict' not in out
    assert 'Epoch(train) [1][4/4]' in out and 'Epoch(val) [1][2/2]' in out

    state = torch.load(work / 'epoch_1.pth', map_location='cpu')['state_dict']
    gates = {k: v for k, v in state.items() if k.endswith('.gate') and 'ema' not in k}
    assert len(gates) == 6  # after CSPNeXt stages 2-4 and on the 3 PAFPN outputs
    assert all(v.abs().max() > 0 for v in gates.values()), gates  # SK learns from the start
