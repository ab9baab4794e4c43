# Faster R-CNN, ResNeXt-50 32x4d whose grouped 3x3 conv2 in stages c3-c5 is an SK unit
# (SKConv: SKNet's M=2, G=32 from the slot, r=16, L=32, Fuse fc-LN-ReLU), through ResNeXt's
# dcn/stage_with_dcn slot: the ImageNet ResNeXt-50 loads whole, and with gate=True each unit
# starts as exactly the trained conv. The base is the same detector without SK.
_base_ = ['./faster_rcnn_x50_fpn.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

model = dict(
    # PluginResNeXt is mmdet's ResNeXt (same weights) whose SKConv norms train under
    # norm_eval=True (mmdet's ResNeXt would freeze them at their initial statistics).
    backbone=dict(
        type='PluginResNeXt',
        dcn=dict(type='SKConv', branches=2, reduction=16, L=32, fuse_cfg=dict(), gate=True),
        stage_with_dcn=(False, True, True, True)))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
