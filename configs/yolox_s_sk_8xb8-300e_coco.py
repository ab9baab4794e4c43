# YOLOX-s with SK attention on CSPDarknet stages 2-4 and on the PAFPN outputs, COCO 300e.
_base_ = ['mmdet::yolox/yolox_s_8xb8-300e_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

sk = dict(
    type='SKAttention',
    kernels=(3, 3),
    dilations=(1, 2),
    groups=32,
    reduction=16,
    L=32,
    norm_cfg={{_base_.model.backbone.norm_cfg}},
    act_cfg={{_base_.model.backbone.act_cfg}},
    gate=True)  # starts as the identity: YOLOX-s checkpoints (load_from) compute as before
model = dict(
    backbone=dict(
        type='PluginCSPDarknet',
        plugins=[dict(cfg=sk, stages=(False, True, True, True), position='after_stage')]),
    # The PAFPN keeps its own weight names, so plain YOLOX-s checkpoints load whole.
    neck=dict(_delete_=True, type='PluginNeck', neck={{_base_.model.neck}}, plugin=sk))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
