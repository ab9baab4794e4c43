# YOLOX-s with SK attention on CSPDarknet stages 2-4 and on the PAFPN outputs, COCO 300e.
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'

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

# The gates start at 0 and must move for SK to be used: no weight decay pulling them back to
# the identity, 10x the learning rate (chosen by the pilot of tools/analysis_tools/sk_study.py:
# after 80 fine-tuning iterations the gates reached 0.002 with the base settings, 0.02 so).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.gate': dict(decay_mult=0.0, lr_mult=10.0)}))

# Crash-safe checkpoints that also carry the RNG state, for an exact --resume.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
