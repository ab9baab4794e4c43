# Detectors to ONNX Runtime, any batch and image size (MMDeploy's
# configs/mmdet/detection/detection_onnxruntime_dynamic.py). docs/deploy.md.
_base_ = ['./_base_/base_dynamic.py']
backend_config = dict(type='onnxruntime')
