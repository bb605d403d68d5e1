"""Triton Python-backend model: panoptic fusion of a PEM panoptic graph's outputs (ensemble step).

Inputs: the panoptic head's ``scores``, ``classes``, ``owner``, ``owner_fg``, ``mask_area`` for one
image at network size (batch axis 1). Outputs at network size: ``labels`` uint8 / int32 as
configured (class ids, 255 = void), ``panoptic`` int32 (segment ids, 0 = void), ``segments``
(JSON). Thing classes and thresholds come from the artifact's sidecar (``sidecar`` parameter,
beside this file).
"""

import json
import os
from dataclasses import asdict

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python-backend stub

from contract.sidecar import read_sidecar
from runtime.core.postprocess import category_map, fuse_panoptic_outputs

NAMES = ("scores", "classes", "owner", "owner_fg", "mask_area")
VOID = 255


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.sidecar = read_sidecar(os.path.join(folder, params.get("sidecar", "model.json")))
        self.batching = int(config.get("max_batch_size", 0)) > 0
        wire = {o["name"]: o["data_type"] for o in config["output"]}["labels"]
        self.labels_dtype = pb_utils.triton_string_to_numpy(wire)

    def execute(self, requests):
        responses = []
        sc = self.sidecar
        for request in requests:
            try:
                outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in NAMES}
                labels, panoptic, texts = [], [], []
                for i in range(len(outputs["scores"])):
                    id_map, segments = fuse_panoptic_outputs(
                        outputs,
                        i,
                        sc.thing_ids,
                        sc.num_classes,
                        sc.panoptic.object_mask_threshold,
                        sc.panoptic.overlap_threshold,
                    )
                    labels.append(category_map(id_map, segments, VOID))
                    panoptic.append(id_map)
                    texts.append(json.dumps([asdict(s) for s in segments]).encode())
                segments_shape = (len(texts), 1) if self.batching else (len(texts),)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("labels", np.stack(labels).astype(self.labels_dtype)),
                            pb_utils.Tensor("panoptic", np.stack(panoptic).astype(np.int32)),
                            pb_utils.Tensor(
                                "segments", np.array(texts, dtype=np.object_).reshape(segments_shape)
                            ),
                        ]
                    )
                )
            except Exception as exc:  # one bad request fails alone
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
