"""INT8 calibration (Q/DQ ONNX and TensorRT calibration caches)."""
