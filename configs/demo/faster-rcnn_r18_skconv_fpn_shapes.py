# CPU demo with SKConv: the plain demo with conv2 of the BasicBlocks of c3-c5 as a gated SK
# unit (SKNet's M=2: 3x3 and 3x3 dilated by 2, Fuse fc-LN-ReLU), through PluginResNet's dcn slot.
_base_ = ['./faster-rcnn_r18_fpn_shapes.py', '../_base_/sk_runtime.py']

model = dict(
    backbone=dict(
        dcn=dict(type='SKConv', branches=2, reduction=16, L=32, fuse_cfg=dict(), gate=True),
        stage_with_dcn=(False, True, True, True)))

# The gates start at 0: no weight decay, 10x the learning rate (configs/_base_/sk_runtime.py).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.sk_gate_custom_keys}}))
