"""The strict proxy itself, against NVIDIA's real TensorRT bindings: it must refuse exactly what the
real release would refuse, or the tests that run the engine builder and the TensorRT backend
through it (tests/export/test_tensorrt_engine.py, tests/runtime/test_tensorrt_backend.py) prove nothing."""

import types

import pytest

from tests.helpers.real_api_surface import TENSORRT_VERSIONS, surface_or_reason
from tests.helpers.strict_api import BadCallForRealApi, MissingInRealApi, StandInIncomplete, StrictApi


def _surface(version):
    surface, reason = surface_or_reason("tensorrt", version)
    if surface is None:
        pytest.skip(reason)
    return surface


def _stand_in():
    """The least stand-in that lets the proxy be exercised: it accepts anything."""

    class Config:
        def set_memory_pool_limit(self, pool, pool_size):
            return None

        def set_flag(self, flag):
            return None

    class Network:
        num_layers = 0

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network()

        def create_builder_config(self):
            return Config()

    trt = types.ModuleType("tensorrt")
    trt.Builder = Builder
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    return trt


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_the_surface_is_the_real_release(version):
    module = _surface(version)["module"]
    flags = module["BuilderFlag"]["enum"]
    creation = module["NetworkDefinitionCreationFlag"]["enum"]
    if version.startswith("10."):
        assert {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= set(flags)
        assert "IInt8EntropyCalibrator2" in module and creation["STRONGLY_TYPED"] == 1
    else:  # TensorRT 11: strongly typed only; no precision flags, no implicit INT8 calibration
        assert not {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(flags)
        assert "IInt8EntropyCalibrator2" not in module and creation["STRONGLY_TYPED"] == 0
        assert "EXPLICIT_BATCH" not in creation
    names = [
        p["name"]
        for p in module["IBuilderConfig"]["members"]["set_memory_pool_limit"]["signatures"][0]["params"]
    ]
    assert names == ["pool", "pool_size"]


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_wrong_names_and_arguments_are_refused(version):
    api = StrictApi(_surface(version), f"TensorRT {version}")
    trt = api.module(_stand_in())
    builder = trt.Builder(None)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 20)  # right: positional
    config.set_memory_pool_limit(pool=trt.MemoryPoolType.WORKSPACE, pool_size=1 << 20)  # right: by name
    assert api.mismatches == []
    with pytest.raises(BadCallForRealApi, match="no argument named 'size'"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, size=1 << 20)
    with pytest.raises(BadCallForRealApi, match="positional"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1, 2)
    with pytest.raises(BadCallForRealApi, match="Builder"):
        trt.Builder()  # the real constructor needs a logger
    with pytest.raises(MissingInRealApi, match="create_netwrk"):
        builder.create_netwrk(0)
    with pytest.raises(MissingInRealApi, match="read-only"):
        builder.create_network(0).num_layers = 3
    with pytest.raises(MissingInRealApi, match="has no attribute 'NetworkBuilder'"):
        trt.NetworkBuilder  # noqa: B018
    assert not hasattr(trt.BuilderFlag, "FP64")  # a probe for a missing member answers False
    if version.startswith("11."):
        with pytest.raises(MissingInRealApi, match="FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.set_flag(trt.BuilderFlag.FP16)
        with pytest.raises(StandInIncomplete, match="INT8"):  # real in 10.x: the stand-in must have it
            trt.BuilderFlag.INT8  # noqa: B018
    assert len(api.mismatches) >= 6  # every refusal is also on record for the teardown check
