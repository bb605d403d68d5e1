"""Triton Python-backend model: the torch-free ``runtime.Segmenter`` behind one Triton model.

Input ``image``: uint8 H x W x 3 (any size; BGR unless the ``input_color`` parameter says RGB).
Outputs: ``labels`` H x W (class ids, 255 = void for panoptic; the dtype the config gives it:
uint8 when the ids fit a byte); panoptic artifacts also
``panoptic`` int32 H x W (segment ids, 0 = void) and ``segments`` (one JSON string: the segments'
id, category_id, isthing, score, area). Parameters (config.pbtxt): ``artifact`` (path relative to
this version folder), ``input_color``, ``providers`` (comma-separated onnxruntime providers;
empty = the runtime's default), ``threads`` (0 = onnxruntime's default).
"""

import json
import os
from dataclasses import asdict

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python-backend stub

from runtime import Segmenter


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        providers = [p for p in params.get("providers", "").split(",") if p.strip()] or None
        self.segmenter = Segmenter.open(
            os.path.join(folder, params.get("artifact", "artifact/model.onnx")),
            providers=providers,
            input_color=params.get("input_color", "BGR"),
            threads=int(params.get("threads", "0") or 0),
        )
        self.panoptic = self.segmenter.artifact.head == "panoptic"
        wire = {o["name"]: o["data_type"] for o in config["output"]}["labels"]
        self.labels_dtype = pb_utils.triton_string_to_numpy(wire)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
                result = self.segmenter.predict(image)
                outputs = [pb_utils.Tensor("labels", np.ascontiguousarray(result.labels, self.labels_dtype))]
                if self.panoptic:
                    segments = json.dumps([asdict(s) for s in result.segments])
                    outputs.append(
                        pb_utils.Tensor("panoptic", np.ascontiguousarray(result.panoptic, np.int32))
                    )
                    outputs.append(
                        pb_utils.Tensor("segments", np.array([segments.encode()], dtype=np.object_))
                    )
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as exc:  # a bad image fails its own request, not the batch or the model
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        self.segmenter.close()
