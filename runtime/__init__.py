"""Torch-free runtime for exported PEM models: numpy + opencv + onnxruntime or TensorRT.

>>> from runtime import Segmenter
>>> seg = Segmenter.open("artifacts/model.onnx")
>>> result = seg.predict(cv2.imread("frame.png"))   # result.labels: (H, W) int32
"""

from runtime.core.artifact import Artifact, load_artifact
from runtime.core.segmenter import Result, Segmenter, read_video
from runtime.errors import ArtifactError, BackendUnavailableError, InputError, RuntimeToolError

__all__ = [
    "Artifact",
    "ArtifactError",
    "BackendUnavailableError",
    "InputError",
    "Result",
    "RuntimeToolError",
    "Segmenter",
    "load_artifact",
    "read_video",
]
