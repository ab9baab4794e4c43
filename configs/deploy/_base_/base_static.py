# What every detection deploy config here shares, in MMDeploy's form (MMDeploy's
# configs/_base_/onnx_config.py and configs/mmdet/_base_/base_static.py): an end-to-end ONNX
# graph, image in, `dets` (N, num_dets, 5: x1, y1, x2, y2, score) and `labels` out, NMS inside.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    # 16, not MMDeploy's 11: ONNX's RoiAlign before opset 16 has no `aligned` mode, which
    # MMDeploy emulates by shifting the RoIs, and ONNX Runtime then stretches every RoI smaller
    # than one feature cell to one cell, where mmcv's RoIAlign does not; from opset 16 ONNX
    # Runtime computes mmcv's aligned RoIAlign itself (docs/deploy.md: measured both ways).
    opset_version=16,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['dets', 'labels'],
    # None: the shape the model config's test pipeline gives the export image (static), or
    # (W, H) to resize every image to it (the pipeline's Resize then ignores the aspect ratio).
    input_shape=None,
    # MMDeploy's TorchScript graph optimiser is not in its PyPI wheel (it would warn "Can not
    # optimize model, please build torchscipt extension" and export the same graph).
    optimize=False)
# Post-processing. MMDeploy takes the score threshold (`score_thr`), the NMS IoU threshold
# (`nms.iou_threshold`) and the detections kept (`max_per_img`) from the model config's
# `test_cfg` where it sets them, so the exported detector keeps what the PyTorch one keeps;
# the values below are used only where the test_cfg is silent (YOLOX has no max_per_img).
# The last two have no test_cfg counterpart: `max_output_boxes_per_class` caps each class
# before the final top-k (300: no class is cut below the largest max_per_img of the configs
# here, RTMDet's 300; MMDeploy's own default is 200), and `pre_top_k` keeps the best boxes
# before NMS (MMDeploy's 5000: at least what the test_cfg's `nms_pre` passes, 1000 per level).
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,  # YOLOv3's, as MMDeploy's
        iou_threshold=0.5,
        max_output_boxes_per_class=300,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1,
    ))
