# Detectors to ONNX Runtime, the input shape fixed at export (MMDeploy's
# configs/mmdet/detection/detection_onnxruntime_static.py). docs/deploy.md.
_base_ = ['./_base_/base_static.py']
backend_config = dict(type='onnxruntime')
