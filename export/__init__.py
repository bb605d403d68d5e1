"""PyTorch -> ONNX export, graph simplification, parity checks and TensorRT engines."""
