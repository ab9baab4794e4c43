# RTMDet-s with SK attention after CSPNeXt stages 2-4 and on the 3 CSPNeXtPAFPN outputs, COCO.
# gate=True: each SK block starts as the identity, so RTMDet-s's COCO checkpoint (load_from,
# 44.5 box AP in MMDetection's metafile) computes exactly what it computed until training moves
# the gates. RTMDet's own recipe otherwise (300 epochs, its pipelines, EMA).
# To train from the ImageNet CSPNeXt instead (RTMDet's own start), drop `load_from`: the base's
# backbone init_cfg loads cspnext-s_imagenet_600e.pth whole, and SK starts as the identity
# on it.
_base_ = ['mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py', './_base_/sk_runtime.py']

custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)

load_from = 'https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_s_8xb32-300e_coco/rtmdet_s_8xb32-300e_coco_20220905_161602-387a891e.pth'  # noqa

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
        type='PluginCSPNeXt',
        plugins=[dict(cfg=sk, stages=(False, True, True, True), position='after_stage')]),
    # The PAFPN keeps its own weight names, so RTMDet checkpoints load whole.
    neck=dict(_delete_=True, type='PluginNeck', neck={{_base_.model.neck}}, plugin=sk))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))

default_hooks = dict(checkpoint={{_base_.sk_checkpoint_hook}})
