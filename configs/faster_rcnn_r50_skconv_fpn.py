# Faster R-CNN, ResNet-50 whose 3x3 conv2 in stages c3-c5 is an SK unit (SKConv, SKNet's M=2:
# 3x3 and 3x3 dilated by 2, Fuse fc-LN-ReLU), through ResNet's own dcn/stage_with_dcn slot.
# SKConv holds the conv's weight under the conv's name, so the ImageNet ResNet-50 (init_cfg) or
# a COCO Faster R-CNN (load_from) loads whole; gate=True: each unit starts as exactly that conv.
# ResNet-50's conv2 has groups=1, so the dilated branch is a dense 3x3 (the slot's groups).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

model = dict(
    # PluginResNet is ResNet (same weights) whose SKConv norms train under norm_eval=True.
    backbone=dict(
        type='PluginResNet',
        dcn=dict(type='SKConv', branches=2, reduction=16, L=32, fuse_cfg=dict(), gate=True),
        stage_with_dcn=(False, True, True, True)))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
