# RetinaNet with SKNet-18 (timm's ImageNet skresnet18.ra_in1k, 73.0% top-1, against ResNet-18's
# 69.8%) as backbone, COCO 1x: the small detector. The delta of MMDetection's
# retinanet_r18_fpn_1x_coco.py (same widths 64-512 into the FPN); for SKNet-34 (skresnet34.ra_in1k)
# set depth=34 and its converted file. Weights: docs/sknet.md.
_base_ = ['mmdet::retinanet/retinanet_r18_fpn_1x_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='SKNet',
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sknet18_timm.pth')))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
