"""The real ``tritonserver`` binary from the ``nvidia-pytriton`` wheel, started on a model repository.

The wheel ships ``pytriton/tritonserver/{bin/tritonserver, backends/python, python_backend_stubs/3.X}``
and its shared libraries in ``nvidia_pytriton.libs``. The Python backend runs each model in a
``triton_python_backend_stub`` process that embeds libpython: the stub built for *this*
stub's Python version is put in a private backends folder, ``LD_LIBRARY_PATH`` leads with that
Python's libpython folder, ``PATH`` with its ``bin`` (the embedded interpreter finds its prefix,
hence a venv's site-packages, from the ``python3`` on ``PATH``) and ``PYTHONPATH`` with the
repository (so the stub imports this checkout's ``runtime``). PyTriton's own decorator API is not
used. Used by the tests and by benchmarks/triton_vs_inprocess.py.

The stub's Python must have numpy < 2: the stubs in nvidia-pytriton 0.7.0 are built against the
numpy 1.x C API, and under numpy 2 every output tensor reaches the server with 0 bytes (observed:
``binary_data_size: 0``; the wheel itself requires numpy < 2). ``$PEM_TRITON_STUB_PYTHON`` names
such an interpreter (a venv with ``numpy<2``, ``opencv-python-headless<4.12``, ``onnxruntime``;
.ci/run makes one); without it this interpreter is used when its numpy is 1.x.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pytriton_dir() -> Path | None:
    """``site-packages/pytriton`` of an installed ``nvidia-pytriton`` wheel (not imported: its
    Python API needs more dependencies than the binary does)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "tritonserver" / "bin" / "tritonserver").is_file() else None


STUB_PYTHON_VARIABLE = "PEM_TRITON_STUB_PYTHON"
_PROBE = (
    "import sys, sysconfig, ctypes.util, pathlib, numpy, cv2, onnxruntime; "
    "v = f'{sys.version_info[0]}.{sys.version_info[1]}'; d = sysconfig.get_config_var('LIBDIR') or ''; "
    "shared = (pathlib.Path(d) / f'libpython{v}.so.1.0').exists() "
    "or bool(ctypes.util.find_library(f'python{v}')); "
    "print(v); print(d or '-'); print(int(shared)); print(numpy.__version__)"
)


@functools.cache
def stub_python() -> tuple[str, str, str] | str:
    """(python executable, ``X.Y`` version, libpython folder) of the stub's interpreter, or why
    there is none."""
    python = os.environ.get(STUB_PYTHON_VARIABLE) or sys.executable
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        return f"${STUB_PYTHON_VARIABLE} {python}: cannot run it ({exc})"
    if out.returncode != 0:
        return f"{python} cannot import numpy, cv2 and onnxruntime for the Python-backend stub"
    version, libdir, shared, numpy_version = out.stdout.split()
    if shared != "1":
        return f"{python} has no shared libpython for the Python-backend stub to embed"
    if int(numpy_version.split(".")[0]) >= 2:
        return (
            f"{python} has numpy {numpy_version}; the nvidia-pytriton stub needs numpy < 2: set "
            f"${STUB_PYTHON_VARIABLE} to a Python with numpy<2, opencv-python-headless<4.12, onnxruntime"
        )
    return python, version, "" if libdir == "-" else libdir


def unavailable_reason() -> str | None:
    """Why the real server cannot run here, or None when it can."""
    root = pytriton_dir()
    if root is None:
        return "nvidia-pytriton (the tritonserver binary) is not installed: pip install nvidia-pytriton"
    if importlib.util.find_spec("tritonclient") is None:
        return "tritonclient is not installed: pip install 'tritonclient[http,grpc]'"
    stub = stub_python()
    if isinstance(stub, str):
        return stub
    if not (root / "tritonserver" / "python_backend_stubs" / stub[1]).is_dir():
        return f"the nvidia-pytriton wheel has no Python-backend stub for Python {stub[1]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """``tritonserver --model-repository REPO`` on free local ports; a context manager."""

    def __init__(self, repository: Path, log: Path | None = None, timeout: float = 120.0):
        root = pytriton_dir()
        stub = stub_python()
        assert root is not None and not isinstance(stub, str), unavailable_reason()
        self._stub = stub
        self.root = root / "tritonserver"
        self.repository = Path(repository)
        self.timeout = timeout
        self.http_port, self.grpc_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="pem-triton-"))
        self.log = log or self._tmp / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _backends(self) -> Path:
        """A backends folder with the Python backend and the stub for this interpreter's version."""
        backends = self._tmp / "backends"
        python = backends / "python"
        python.mkdir(parents=True)
        for item in (self.root / "backends" / "python").iterdir():
            if item.is_file():
                (python / item.name).symlink_to(item)
        _, version, _ = self._stub
        stub = self.root / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy(stub, python / "triton_python_backend_stub")
        return backends

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        python, _, libdir = self._stub
        libs = [libdir, str(self.root.parent.parent / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*filter(None, libs), env.get("LD_LIBRARY_PATH", "")])
        env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self) -> TritonServer:
        cmd = [
            str(self.root / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=5",  # default 30: stopping waits that long for the stubs
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env())
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited {self.process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {self.timeout:.0f} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._tmp / "backends", ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
