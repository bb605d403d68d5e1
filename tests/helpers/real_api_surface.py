"""The real API surface of NVIDIA's TensorRT and cuda-python Python modules, without a GPU.

TensorRT: PyPI carries NVIDIA's compiled bindings for every release as small wheels
(``tensorrt-cu12-bindings``). The extension module links ``libnvinfer.so.N``,
``libnvonnxparser.so.N`` and ``libnvinfer_plugin.so.N`` (their wheels are placeholders that download
from NVIDIA's own index, unreachable here) but only resolves a handful of C entry points from them
at import. Stub libraries exporting those names (compiled here with the machine's C compiler;
never called) let ``import tensorrt_bindings`` succeed, which exposes every class, method,
property, enum member and pybind11 signature of that release.

cuda-python: ``cuda.bindings.runtime`` imports without a GPU (its calls return
``cudaErrorInsufficientDriver``), and its Cython functions carry real signatures.

Each surface is dumped to JSON by a subprocess (so several versions never meet in one process)
and cached under ``$PEM_DEPLOY_CACHE/real-api``. Nothing from NVIDIA is committed: the wheels come
from the package registry at test time, like any other test dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

# The releases the runtime supports: JetPack 6 (TensorRT 10.3), JetPack 7.2 / DeepStream 9.1
# (TensorRT 10.16) and TensorRT 11.
TENSORRT_VERSIONS: tuple[str, ...] = ("10.3.0", "10.16.1.11", "11.4.0.106")
# cuda-python's runtime bindings: 12.x for JetPack 6's driver, 13.x elsewhere.
CUDA_BINDINGS_VERSIONS: tuple[str, ...] = ("12.9.10", "13.5.0")

# The C entry points the TensorRT bindings resolve at import (``nm -D --undefined-only``).
_TRT_ENTRY_POINTS = (
    "createInferBuilder_INTERNAL",
    "createInferRefitter_INTERNAL",
    "createInferRuntime_INTERNAL",
    "createNvOnnxParserRefitter_INTERNAL",
    "createNvOnnxParser_INTERNAL",
    "getBuilderPluginRegistry",
    "getNvOnnxParserVersion",
    "getPluginRegistry",
    "initLibNvInferPlugins",
)
_TRT_LIBRARIES = ("nvinfer", "nvonnxparser", "nvinfer_plugin")


class SurfaceUnavailable(Exception):
    """The real module cannot be had here (no registry, no C compiler); the message says why."""


def cache_root() -> Path:
    base = os.environ.get("PEM_DEPLOY_CACHE") or str(Path.home() / ".cache" / "pem-deploy")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return Path(base) / "real-api" / tag


def _pip(*args: str, timeout: float = 600) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SurfaceUnavailable(f"pip {' '.join(args)} timed out") from None
    if out.returncode != 0:
        tail = [line for line in out.stderr.splitlines() if line.strip() and "WARNING" not in line][-1:]
        raise SurfaceUnavailable(f"pip {' '.join(args)} failed: {' '.join(tail) or out.returncode}")


def _stub_libraries(folder: Path, major: int) -> Path:
    """``lib{nvinfer,nvonnxparser,nvinfer_plugin}.so.MAJOR`` exporting the entry points as no-ops."""
    lib = folder / f"stub-lib-{major}"
    if all((lib / f"lib{name}.so.{major}").is_file() for name in _TRT_LIBRARIES):
        return lib
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SurfaceUnavailable("no C compiler to build the TensorRT stub libraries")
    tmp = folder / f".stub-lib-{major}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    source = tmp / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in _TRT_ENTRY_POINTS))
    for name in _TRT_LIBRARIES:
        soname = f"lib{name}.so.{major}"
        cmd = [compiler, "-shared", "-fPIC", "-o", str(tmp / soname), str(source), f"-Wl,-soname,{soname}"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SurfaceUnavailable(f"cannot compile the TensorRT stub libraries: {result.stderr.strip()}")
    source.unlink()
    if lib.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, lib)
    return lib


def _dump(script: str, env: dict[str, str], target: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    if out.returncode != 0:
        raise SurfaceUnavailable(f"importing the real module failed: {out.stderr.strip()[-400:]}")
    return json.loads(target.read_text())


def tensorrt_surface(version: str) -> dict:
    """The API surface of ``tensorrt-cu12-bindings==version`` (see :data:`_DUMP_TENSORRT`)."""
    folder = cache_root() / f"tensorrt-{version}"
    target = folder / "surface.json"
    if target.is_file():
        return json.loads(target.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    wheels = folder / "wheel"
    if not list(wheels.glob("*.whl")):
        _pip("download", "--no-deps", f"tensorrt-cu12-bindings=={version}", "-d", str(wheels))
    package = folder / "package"
    if not (package / "tensorrt_bindings").is_dir():
        with zipfile.ZipFile(next(wheels.glob("*.whl"))) as wheel:
            wheel.extractall(package)
    lib = _stub_libraries(folder, int(version.split(".")[0]))
    env = {"LD_LIBRARY_PATH": str(lib), "PYTHONPATH": str(package)}
    surface = _dump(_DUMP_TENSORRT, env, target.with_suffix(".tmp"))
    os.replace(target.with_suffix(".tmp"), target)
    return surface


def cuda_runtime_surface(version: str) -> dict:
    """The API surface of ``cuda.bindings.runtime`` from ``cuda-bindings==version``."""
    folder = cache_root() / f"cuda-bindings-{version}"
    target = folder / "surface.json"
    if target.is_file():
        return json.loads(target.read_text())
    package = folder / "package"
    if not (package / "cuda" / "bindings").is_dir():
        _pip("install", "--no-compile", "--target", str(package), f"cuda-bindings=={version}")
    surface = _dump(_DUMP_CUDA, {"PYTHONPATH": str(package)}, target.with_suffix(".tmp"))
    os.replace(target.with_suffix(".tmp"), target)
    return surface


# Runs in a subprocess with the real module importable; writes the surface as JSON to argv[1].
# Signatures come from pybind11's docstrings ("name(self: T, arg: T = default) -> R", one line per
# overload), which carry the argument names a keyword call must use.
_SHARED_PARSER = r"""
import inspect, json, re, sys

def split_top(text):
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip()); cur = ""; continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts

def short(type_text):
    return type_text.strip().split(".")[-1] if type_text else ""

SIG = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\)(?: -> (.+))?$")

def pybind_signatures(obj, name):
    doc = getattr(obj, "__doc__", None) or ""
    sigs = []
    for line in doc.splitlines():
        m = SIG.match(line.strip())
        if not m or m.group(1) != name:
            continue
        params = []
        for p in split_top(m.group(2)):
            if p.startswith("**"):
                params.append({"name": p[2:].split(":")[0], "kind": "varkw", "default": True})
            elif p.startswith("*"):
                params.append({"name": p[1:].split(":")[0], "kind": "varargs", "default": True})
            else:
                head, _, default = p.partition("=")
                pname, _, ptype = head.partition(":")
                params.append({"name": pname.strip(), "kind": "normal", "default": bool(default.strip()),
                               "type": short(ptype)})
        sigs.append({"params": params, "returns": short(m.group(3) or "")})
    # a pybind overload set's first line is "name(*args, **kwargs)": the numbered lines are the truth
    real = [s for s in sigs if [p["kind"] for p in s["params"]] != ["varargs", "varkw"]]
    return real or sigs

def python_signatures(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    kinds = {inspect.Parameter.VAR_POSITIONAL: "varargs", inspect.Parameter.VAR_KEYWORD: "varkw",
             inspect.Parameter.POSITIONAL_ONLY: "positional", inspect.Parameter.KEYWORD_ONLY: "keyword"}
    params = [{"name": p.name, "kind": kinds.get(p.kind, "normal"),
               "default": p.default is not inspect.Parameter.empty or p.kind in (2, 4),
               "type": str(p.annotation) if p.annotation is not inspect.Parameter.empty else ""}
              for p in sig.parameters.values()]
    return [{"params": params, "returns": ""}]

def signatures(obj, name):
    return pybind_signatures(obj, name) or python_signatures(obj) or []
"""

_DUMP_TENSORRT = (
    _SHARED_PARSER
    + r"""
import tensorrt_bindings as trt

def enum_members(cls):
    members = getattr(cls, "__members__", None)
    return {name: int(value) for name, value in members.items()} if isinstance(members, dict) else None

def describe_class(cls):
    out = {"kind": "class", "enum": enum_members(cls), "members": {}}
    for name in dir(cls):
        if name.startswith("__") and name != "__init__":
            continue
        static = inspect.getattr_static(cls, name, None)
        value = getattr(cls, name, None)
        if isinstance(static, property):
            setter = static.fset
            out["members"][name] = {"kind": "property", "writable": setter is not None,
                                    "returns": _prop_type(static)}
        elif isinstance(value, type):
            out["members"][name] = {"kind": "class", "enum": enum_members(value)}
        elif callable(value):
            builtin = type(static).__name__ == "builtin_function_or_method"
            kind = "static" if isinstance(static, staticmethod) or builtin else "method"
            sigs = signatures(value, name)
            if kind == "method" and sigs and sigs[0]["params"] and sigs[0]["params"][0]["name"] == "self":
                sigs = [dict(s, params=s["params"][1:]) for s in sigs]
            elif kind == "method" and type(static).__name__ == "function":  # pure-Python method
                sigs = [dict(s, params=s["params"][1:]) for s in sigs]
            out["members"][name] = {"kind": kind, "signatures": sigs}
        else:
            out["members"][name] = {"kind": "value", "type": type(value).__name__}
    return out

PROP = re.compile(r"^\(.*\) -> (.+)$")

def _prop_type(prop):
    doc = (getattr(prop.fget, "__doc__", None) or "").strip().splitlines()
    m = PROP.match(doc[0]) if doc else None
    return short(m.group(1)) if m else ""

surface = {"version": trt.__version__, "module": {}}
for name in dir(trt):
    if name.startswith("_"):
        continue
    value = getattr(trt, name)
    if isinstance(value, type):
        surface["module"][name] = describe_class(value)
    elif inspect.ismodule(value):
        surface["module"][name] = {"kind": "module"}
    elif callable(value):
        surface["module"][name] = {"kind": "function", "signatures": signatures(value, name)}
    else:
        surface["module"][name] = {"kind": "value", "type": type(value).__name__}
open(sys.argv[1], "w").write(json.dumps(surface, indent=1, sort_keys=True))
"""
)

_DUMP_CUDA = (
    _SHARED_PARSER
    + r"""
from cuda.bindings import runtime as cudart
import importlib.metadata as md

surface = {"version": md.version("cuda-bindings"), "module": {}}
for name in dir(cudart):
    if name.startswith("_"):
        continue
    value = getattr(cudart, name)
    if isinstance(value, type):
        members = getattr(value, "__members__", None)
        surface["module"][name] = {
            "kind": "class",
            "enum": {n: int(v) for n, v in members.items()} if isinstance(members, dict) else None,
            "members": {m: {"kind": "value"} for m in dir(value) if not m.startswith("_")},
        }
    elif callable(value):
        surface["module"][name] = {"kind": "function", "signatures": python_signatures(value) or []}
    else:
        surface["module"][name] = {"kind": "value", "type": type(value).__name__}
open(sys.argv[1], "w").write(json.dumps(surface, indent=1, sort_keys=True))
"""
)


_FAILURES: dict[str, str] = {}


def surface_or_reason(kind: str, version: str) -> tuple[dict | None, str]:
    """(surface, "") or (None, why not), remembering a failure for the rest of the session."""
    key = f"{kind}-{version}"
    if key in _FAILURES:
        return None, _FAILURES[key]
    loader = tensorrt_surface if kind == "tensorrt" else cuda_runtime_surface
    try:
        return loader(version), ""
    except SurfaceUnavailable as exc:
        _FAILURES[key] = f"the real {kind} {version} API cannot be had here: {exc}"
        return None, _FAILURES[key]
