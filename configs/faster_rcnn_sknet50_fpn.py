# Faster R-CNN with SKNet-50 (the paper's SKNet-50, trained on ImageNet by timm:
# skresnext50_32x4d.ra_in1k, 80.2% top-1) in place of ResNeXt-50 32x4d, COCO 1x.
# The delta of faster_rcnn_x50_fpn.py: the backbone type and its ImageNet weights, converted
# from timm's file by tools/model_converters/timm_sknet2mmdet.py (docs/sknet.md).
# timm trained it on RGB images normalised by the ImageNet mean/std, the base's preprocessing.
_base_ = ['./faster_rcnn_x50_fpn.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='SKNet',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sknet50_timm.pth')))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
