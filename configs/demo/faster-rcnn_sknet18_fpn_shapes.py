# CPU demo with SKNet-18: the plain demo with ResNet-18 replaced by SKNet-18 (timm's skresnet18
# form: an SK unit with split input as conv1 of every BasicBlock), trained from scratch: SK is
# the architecture, as in the paper.
_base_ = './faster-rcnn_r18_fpn_shapes.py'

model = dict(
    backbone=dict(
        _delete_=True, type='SKNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch', init_cfg=None))
