# Faster R-CNN, ResNeXt-50 32x4d, no SK: the baseline of faster_rcnn_x50_skconv_fpn.py.
# MMDetection 3.3 ships a plain Faster R-CNN on ResNeXt-101 only (its X-50 one is the GN + WS
# detector of gn+ws/): this is faster-rcnn_x101-32x4d_fpn_1x_coco.py's backbone delta at depth
# 50, so that the pair differs by SKConv alone (tools/analysis_tools/benchmark_detector.py).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=50,
        groups=32,
        base_width=4,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext50_32x4d')))
