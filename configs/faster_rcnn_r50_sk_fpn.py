# Faster R-CNN, ResNet-50 with SK attention in stages c3-c5 and on the FPN outputs, COCO 1x.
# SK preset of the SKNet paper (3x3 and 3x3 dilated by 2, 32 groups, r=16, L=32): the
# reference module's default (kernels 1/3/5/7, dense) would cost more than the whole detector
# at FPN resolution.
# gate=True: each SK block starts as the identity, so the ImageNet ResNet (init_cfg) or a COCO
# Faster R-CNN (load_from) computes exactly what it computed without SK until training moves it.
# Form and places as the ablation kept them (docs/results.md, "Which SK to use": no arm beat
# this one on the demo; the neck-only arm is the cheaper option, SKConv the SKNet form).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

sk = dict(
    type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=32, reduction=16, L=32,
    gate=True)
model = dict(
    # PluginResNet is ResNet (same weights) whose SK norms train under norm_eval=True.
    backbone=dict(
        type='PluginResNet',
        plugins=[dict(cfg=sk, stages=(False, True, True, True), position='after_conv2')]),
    # SK on the FPN outputs P3-P6 (P2 at stride 4 is left plain for cost); the FPN keeps its
    # own weight names, so plain Faster R-CNN checkpoints load whole.
    neck=dict(
        _delete_=True,
        type='PluginNeck',
        neck={{_base_.model.neck}},
        levels=(1, 2, 3, 4),
        plugin=sk))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
