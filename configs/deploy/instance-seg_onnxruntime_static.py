# Mask R-CNN to ONNX Runtime, the input shape fixed at export (MMDeploy's
# configs/mmdet/instance-seg/instance-seg_onnxruntime_static.py): a third output, `masks`,
# each detection's 28x28 mask probabilities, pasted into the image by MMDeploy's Python
# post-processing (export_postprocess_mask=False), as MMDetection pastes them.
_base_ = ['./_base_/base_static.py']
onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
backend_config = dict(type='onnxruntime')
