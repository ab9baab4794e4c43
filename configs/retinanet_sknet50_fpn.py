# RetinaNet with SKNet-50 (timm's ImageNet skresnext50_32x4d) as backbone, COCO 1x: the
# delta of MMDetection's ResNeXt RetinaNet (retinanet_x101-32x4d_fpn_1x_coco.py) at depth 50,
# with the converted timm weights (docs/sknet.md).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='SKNet',
        depth=50,
        groups=32,
        base_width=4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/sknet50_timm.pth')))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
