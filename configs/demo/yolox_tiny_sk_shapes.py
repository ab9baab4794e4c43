# CPU demo with SK: the plain YOLOX-tiny demo plus the SK delta of
# configs/yolox_s_sk_8xb8-300e_coco.py (gated SK after CSPDarknet stages 2-4 and on the 3 PAFPN
# outputs, YOLOX's norm and activation), trained from scratch: SK is the architecture here.
_base_ = ['./yolox_tiny_shapes.py', '../_base_/sk_runtime.py']

sk = dict(
    type='SKAttention',
    kernels=(3, 3),
    dilations=(1, 2),
    groups=32,
    reduction=16,
    L=32,
    norm_cfg={{_base_.model.backbone.norm_cfg}},
    act_cfg={{_base_.model.backbone.act_cfg}},
    gate=True)
model = dict(
    backbone=dict(
        type='PluginCSPDarknet',
        plugins=[dict(cfg=sk, stages=(False, True, True, True), position='after_stage')]),
    neck=dict(_delete_=True, type='PluginNeck', neck={{_base_.model.neck}}, plugin=sk))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))
