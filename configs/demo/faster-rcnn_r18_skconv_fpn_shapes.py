# CPU demo with SKConv: the plain demo with conv2 of the BasicBlocks of c3-c5 as a gated SK
# unit (SKNet's M=2: 3x3 and 3x3 dilated by 2, Fuse fc-LN-ReLU), through PluginResNet's dcn slot.
_base_ = './faster-rcnn_r18_fpn_shapes.py'

model = dict(
    backbone=dict(
        dcn=dict(type='SKConv', branches=2, reduction=16, L=32, fuse_cfg=dict(), gate=True),
        stage_with_dcn=(False, True, True, True)))

# The gates start at 0 and must move for SK to be used (see configs/faster_rcnn_r50_sk_fpn.py).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.gate': dict(decay_mult=0.0, lr_mult=10.0)}))
