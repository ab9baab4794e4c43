# CPU demo, no SK: MMDetection's YOLOX-tiny (CSPDarknet 0.33 deep x 0.375 wide, PAFPN 96) with
# its recipe scaled to the generated shapes set (tools/misc/generate_demo_data.py): 192 px
# instead of 640 (multi-scale 128-256 every 10 iterations), 10 epochs from scratch instead of
# 300 (1,000 iterations), EMA, SyncNormHook, the recipe's LR shape. Two changes for a schedule
# this short, both chosen on the plain detector alone: the pipeline of the recipe's last
# epochs (resize, HSV, flip, pad) throughout, since with Mosaic and RandomAffine the plain
# detector had 0.004 mAP after 4 of 10 epochs; and AdamW instead of SGD, which in a few
# thousand iterations from scratch learns far less (the demo's Faster R-CNN: 0.034 against
# 0.179 mAP).
_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

data_root = 'data/coco_shapes/'
classes = ('rectangle', 'ellipse', 'triangle', 'cross', 'ring')  # mmdet_sk.datasets.CLASSES
img_scale = (192, 192)  # width, height
max_epochs = 10
num_last_epochs = 1
val_interval = 5

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(
            type='BatchSyncRandomResize',
            random_size_range=(128, 256),
            size_divisor=32,
            interval=10)
    ]),
    bbox_head=dict(num_classes=len(classes)))

train_pipeline = [
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        dataset=dict(
            data_root=data_root,
            metainfo=dict(classes=classes),
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/')),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.001, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
# The recipe's shape: quadratic warm-up (1 epoch here, 5 of 300 there), cosine to 5% of the
# learning rate, constant for the last epoch.
param_scheduler = [
    dict(type='mmdet.QuadraticWarmupLR', by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.001 * 0.05, begin=1,
         T_max=max_epochs - num_last_epochs, end=max_epochs - num_last_epochs, by_epoch=True,
         convert_to_iter_based=True),
    dict(type='ConstantLR', by_epoch=True, factor=1, begin=max_epochs - num_last_epochs,
         end=max_epochs)
]
custom_hooks = [
    dict(type='YOLOXModeSwitchHook', num_last_epochs=num_last_epochs, priority=48),
    dict(type='SyncNormHook', priority=48),
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, update_buffers=True,
         priority=49)
]
# One short run from scratch depends on its seed: fix it, so that a run repeats.
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=8)
