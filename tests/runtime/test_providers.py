"""onnxruntime's TensorRT / CUDA execution-provider options (no GPU here: the option dicts built,
and that the backend hands them to the session)."""

import types

import onnxruntime as ort

from runtime.core.backends.onnxruntime_backend import GpuOptions, OnnxRuntimeBackend, provider_options
from runtime.core.segmenter import open_backend
from tests.helpers.runtime_models import semantic_model, write_artifact

PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_tensorrt_provider_caches_beside_the_artifact(tmp_path):
    model = tmp_path / "seg.onnx"
    trt, cuda, cpu = provider_options(model, PROVIDERS, "fp32")
    assert trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert trt["trt_engine_cache_path"] == trt["trt_timing_cache_path"] == str(tmp_path / "seg.trt-cache")
    assert trt["trt_engine_cache_prefix"] == "seg" and trt["trt_max_workspace_size"] == 2048 << 20
    assert trt["trt_fp16_enable"] is False and trt["trt_int8_enable"] is False  # FP32 stays FP32
    assert "trt_cuda_graph_enable" not in trt and "trt_builder_optimization_level" not in trt
    assert cuda == {
        "device_id": 0,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }
    assert cpu == {}
    fp16 = provider_options(model, PROVIDERS[:1], "fp16")[0]
    assert fp16["trt_fp16_enable"] is True and fp16["trt_int8_enable"] is False
    int8 = provider_options(model, PROVIDERS[:1], "int8")[0]
    assert int8["trt_int8_enable"] is True and int8["trt_fp16_enable"] is False
    custom = GpuOptions(
        cache_dir=tmp_path / "c",
        workspace_mib=512,
        fp16=True,
        device_id=1,
        builder_optimization_level=5,
        cuda_graph=True,
    )
    trt, cuda = provider_options(model, PROVIDERS[:2], "fp32", custom)
    assert trt["trt_engine_cache_path"] == str(tmp_path / "c") and trt["trt_max_workspace_size"] == 512 << 20
    assert (
        trt["trt_fp16_enable"] and trt["trt_builder_optimization_level"] == 5 and trt["trt_cuda_graph_enable"]
    )
    assert cuda["device_id"] == 1 and cuda["enable_cuda_graph"]


def test_backend_passes_the_options_to_the_session(tmp_path, monkeypatch):
    path = write_artifact(tmp_path, semantic_model(32, 64))
    seen = {}
    real = ort.InferenceSession

    def session(model, sess_options=None, providers=None):
        seen.update(providers=[name for name, _ in providers], provider_options=[o for _, o in providers])
        inner = real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])
        return types.SimpleNamespace(
            get_providers=lambda: seen["providers"],
            get_inputs=inner.get_inputs,
            get_outputs=inner.get_outputs,
            run=inner.run,
        )

    monkeypatch.setattr(ort, "get_available_providers", lambda: PROVIDERS)
    monkeypatch.setattr(ort, "InferenceSession", session)
    from runtime import load_artifact

    backend = open_backend(load_artifact(path))
    assert isinstance(backend, OnnxRuntimeBackend) and seen["providers"] == PROVIDERS
    assert seen["provider_options"][0]["trt_engine_cache_path"] == str(tmp_path / "model.trt-cache")
    assert (tmp_path / "model.trt-cache").is_dir()  # created for the provider
    assert backend.provider_options == seen["provider_options"]
