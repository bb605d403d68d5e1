"""Torch-free runtime: numpy + opencv + onnxruntime or TensorRT."""
