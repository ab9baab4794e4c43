# CPU demo with SK: the plain demo plus the SK delta of configs/faster_rcnn_r50_sk_fpn.py,
# scaled to ResNet-18 (SK after conv1 of the BasicBlocks of c3-c5) and the 128-channel FPN.
_base_ = ['./faster-rcnn_r18_fpn_shapes.py', '../_base_/sk_runtime.py']

sk = dict(
    type='SKAttention', kernels=(3, 3), dilations=(1, 2), groups=32, reduction=16, L=32,
    gate=True)
model = dict(
    backbone=dict(plugins=[
        dict(cfg=sk, stages=(False, True, True, True), position='after_conv1')
    ]),
    neck=dict(
        _delete_=True,
        type='PluginNeck',
        neck={{_base_.model.neck}},
        levels=(1, 2, 3, 4),
        plugin=sk))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))
