"""The generated Triton repository's Python-backend models in the real ``tritonserver`` binary of
the ``nvidia-pytriton`` wheel (not PyTriton's decorator API), over HTTP and gRPC.

The wheel's server has the Python backend only (no onnxruntime / TensorRT backends, no GPU), so
the graph models (``onnxruntime_onnx`` / ``tensorrt_plan``) and the ensemble that needs them are
left out of the served copy; their configs are checked against Triton's schema in
test_export_consumers.py. The fusion step of the ensemble is served alone, fed the graph's outputs.
"""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from export.consumers import PackageOptions, package_artifact
from runtime import Segmenter
from runtime.core.postprocess import category_map, fuse_panoptic_outputs
from tests.helpers.runtime_models import image_panoptic_model, semantic_model, write_artifact
from tests.helpers.tritonserver import TritonServer, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")

PYTHON_MODELS = ("sem_runtime", "pan_runtime", "pan_fuse")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server on a repository holding the Python-backend models of a semantic and a
    panoptic bundle."""
    tmp = tmp_path_factory.mktemp("triton")
    (tmp / "sem").mkdir()
    (tmp / "pan").mkdir()
    semantic = write_artifact(tmp / "sem", semantic_model(32, 64))
    panoptic = write_artifact(
        tmp / "pan",
        image_panoptic_model(),
        head="panoptic",
        num_queries=3,
        panoptic={"object_mask_threshold": 0.8},
    )
    repo = tmp / "repository"
    repo.mkdir()
    for name, artifact in (("sem", semantic), ("pan", panoptic)):
        bundle = package_artifact(artifact, tmp / f"bundle-{name}", PackageOptions("triton", model_name=name))
        for model in (bundle.root / "model_repository").iterdir():
            if model.name in PYTHON_MODELS:
                shutil.copytree(model, repo / model.name)
    with TritonServer(repo) as server:
        yield server, semantic, panoptic


def _images():
    """Block scenes (three colour bands, so the panoptic model keeps segments) plus noise, at
    several sizes."""
    rng = np.random.default_rng(0)
    images = []
    for h, w in ((48, 80), (32, 64), (17, 129)):
        image = np.zeros((h, w, 3), np.uint8)
        image[:, : w // 3] = (0, 0, 200)
        image[:, w // 3 : 2 * w // 3] = (0, 200, 0)
        image[:, 2 * w // 3 :] = (200, 0, 0)
        images.append(np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8))
    return images


def _clients(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    return {
        "http": (httpclient, httpclient.InferenceServerClient(server.http_url)),
        "grpc": (grpcclient, grpcclient.InferenceServerClient(server.grpc_url)),
    }


def _infer(module, client, model, inputs, outputs):
    tensors = []
    for name, array, dtype in inputs:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors, outputs=[module.InferRequestedOutput(o) for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_semantic_runtime_model_labels_equal_segmenter_predict(served, protocol):
    server, semantic, _ = served
    module, client = _clients(server)[protocol]
    assert client.is_model_ready("sem_runtime")
    runtime = Segmenter.open(semantic)
    for image in _images():
        got = _infer(module, client, "sem_runtime", [("image", image, "UINT8")], ["labels"])["labels"]
        assert got.dtype == np.uint8 and got.shape == image.shape[:2]  # 3 classes: ids fit a byte
        np.testing.assert_array_equal(got, runtime.predict(image).labels)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_panoptic_runtime_model_equals_segmenter_predict(served, protocol):
    server, _, panoptic = served
    module, client = _clients(server)[protocol]
    runtime = Segmenter.open(panoptic)
    for image in _images():
        got = _infer(
            module, client, "pan_runtime", [("image", image, "UINT8")], ["labels", "panoptic", "segments"]
        )
        expected = runtime.predict(image)
        assert got["labels"].dtype == np.uint8 and got["panoptic"].dtype == np.int32
        np.testing.assert_array_equal(got["labels"], expected.labels)
        np.testing.assert_array_equal(got["panoptic"], expected.panoptic)
        segments = json.loads(got["segments"][0])
        assert [(s["id"], s["category_id"], s["area"]) for s in segments] == [
            (s.id, s.category_id, s.area) for s in expected.segments
        ]
        assert segments  # the model keeps segments, so the comparison is not of two empty lists


def test_a_bad_request_fails_alone(served):
    server, semantic, _ = served
    module, client = _clients(server)["http"]
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException):
        _infer(module, client, "sem_runtime", [("image", np.zeros((0, 4, 3), np.uint8), "UINT8")], ["labels"])
    image = _images()[0]
    got = _infer(module, client, "sem_runtime", [("image", image, "UINT8")], ["labels"])["labels"]
    np.testing.assert_array_equal(got, Segmenter.open(semantic).predict(image).labels)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_fusion_step_equals_the_runtime_fusion(served, protocol):
    server, _, panoptic = served
    module, client = _clients(server)[protocol]
    session = ort.InferenceSession(str(panoptic), providers=["CPUExecutionProvider"])
    artifact = Segmenter.open(panoptic).artifact
    dtypes = {"float32": "FP32", "int32": "INT32", "uint8": "UINT8"}
    for seed in range(3):
        x = np.random.default_rng(seed).normal(0, 2, (1, 3, 32, 64)).astype(np.float32)
        names = [o.name for o in session.get_outputs()]
        graph = dict(zip(names, session.run(names, {"images": x})))
        inputs = [(n, graph[n], dtypes[graph[n].dtype.name]) for n in names]
        got = _infer(module, client, "pan_fuse", inputs, ["labels", "panoptic", "segments"])
        id_map, segments = fuse_panoptic_outputs(
            graph,
            0,
            artifact.thing_ids,
            artifact.num_classes,
            artifact.object_mask_threshold,
            artifact.overlap_threshold,
        )
        np.testing.assert_array_equal(got["panoptic"][0], id_map)
        np.testing.assert_array_equal(got["labels"][0], category_map(id_map, segments, 255))
        assert len(json.loads(got["segments"][0])) == len(segments)
