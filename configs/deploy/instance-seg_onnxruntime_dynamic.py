# Mask R-CNN to ONNX Runtime, any batch and image size (MMDeploy's
# configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py); the masks as in
# instance-seg_onnxruntime_static.py.
_base_ = ['./_base_/base_dynamic.py']
onnx_config = dict(
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes={
        'masks': {
            0: 'batch',
            1: 'num_dets',
            2: 'height',
            3: 'width'
        },
    })
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
backend_config = dict(type='onnxruntime')
