"""Labels-first vs dense scores at 1024x2048: bytes per frame, host-side time, and the transfer
through the real ``tritonserver`` (nvidia-pytriton's binary) over HTTP and gRPC.

What a consumer receives per frame when the argmax is in the graph (``labels``: int32, or uint8
when the classes fit) vs when it is not (float32 / float16 class scores, C x H x W, as Triton users
of dense segmentation outputs get them: server#6243, #8558, #4321). Host-side time: the argmax the
client must then run over the scores in numpy, vs the label map's cast. Transfer: a Python-backend
model that returns a fixed tensor of each kind (no compute), so the round trip is the transfer.

    PEM_TRITON_STUB_PYTHON=/path/to/numpy1-venv/bin/python python benchmarks/labels_vs_scores.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_description, interleaved
from tests.helpers.tritonserver import TritonServer, unavailable_reason

KINDS = {  # output name -> (dtype, triton dtype, per-frame shape given classes C, H, W)
    "labels_uint8": ("uint8", "TYPE_UINT8", lambda c, h, w: (h, w)),
    "labels_int32": ("int32", "TYPE_INT32", lambda c, h, w: (h, w)),
    "scores_fp16": ("float16", "TYPE_FP16", lambda c, h, w: (c, h, w)),
    "scores_fp32": ("float32", "TYPE_FP32", lambda c, h, w: (c, h, w)),
}

ECHO_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

SHAPES = {shapes!r}


class TritonPythonModel:
    def initialize(self, args):
        rng = np.random.default_rng(0)
        self.tensors = {{k: (rng.random(s) * 19).astype(d) for k, (d, s) in SHAPES.items()}}

    def execute(self, requests):
        responses = []
        for request in requests:
            kind = pb_utils.get_input_tensor_by_name(request, "kind").as_numpy()[0].decode()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("out_" + kind, self.tensors[kind])]))
        return responses
"""


def _repository(root: Path, classes: int, height: int, width: int) -> Path:
    model = root / "echo"
    (model / "1").mkdir(parents=True)
    shapes = {k: (d, f(classes, height, width)) for k, (d, _, f) in KINDS.items()}
    (model / "1" / "model.py").write_text(ECHO_MODEL.format(shapes=shapes))
    outputs = "\n".join(
        f'output {{ name: "out_{k}" data_type: {t} dims: {list(f(classes, height, width))} }}'
        for k, (_, t, f) in KINDS.items()
    )
    (model / "config.pbtxt").write_text(
        'name: "echo"\nbackend: "python"\nmax_batch_size: 0\n'
        'input { name: "kind" data_type: TYPE_STRING dims: [1] }\n' + outputs + "\n"
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    c = args.classes
    rng = np.random.default_rng(0)
    scores32 = rng.random((c, height, width), dtype=np.float32)
    scores16 = scores32.astype(np.float16)
    labels32 = scores32.argmax(0).astype(np.int32)
    labels8 = labels32.astype(np.uint8)
    rows: dict[str, dict[str, object]] = {}
    for kind, (dtype, _, shape) in KINDS.items():
        rows[kind] = {"bytes_per_frame": int(np.prod(shape(c, height, width))) * np.dtype(dtype).itemsize}
    # Host side: what the client does with what it received to get a uint8 label image.
    host = interleaved(
        {
            "labels_uint8": lambda: labels8,  # already the label image: nothing to do
            "labels_int32": lambda: labels32.astype(np.uint8),
            "scores_fp16": lambda: scores16.argmax(0).astype(np.uint8),
            "scores_fp32": lambda: scores32.argmax(0).astype(np.uint8),
        },
        runs=args.runs,
        warmup=2,
    )
    for kind, ms in host.items():
        rows[kind]["host_ms"] = round(ms, 2)
    reason = unavailable_reason()
    if reason:
        print(f"transfer through tritonserver skipped: {reason}", file=sys.stderr)
    else:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        tmp = Path(tempfile.mkdtemp(prefix="pem-bench-transfer-"))
        try:
            with TritonServer(_repository(tmp, c, height, width), timeout=300) as server:
                clients = {
                    "http": (
                        httpclient,
                        httpclient.InferenceServerClient(server.http_url, network_timeout=600),
                    ),
                    "grpc": (grpcclient, grpcclient.InferenceServerClient(server.grpc_url)),
                }

                def fetch(protocol: str, kind: str):
                    module, client = clients[protocol]
                    tensor = module.InferInput("kind", [1], "BYTES")
                    tensor.set_data_from_numpy(np.array([kind.encode()], dtype=np.object_))
                    out = client.infer("echo", [tensor], outputs=[module.InferRequestedOutput(f"out_{kind}")])
                    return out.as_numpy(f"out_{kind}")

                for protocol in clients:
                    timed = interleaved(
                        {k: (lambda k=k, p=protocol: fetch(p, k)) for k in KINDS}, runs=args.runs, warmup=1
                    )
                    for kind, ms in timed.items():
                        rows[kind][f"triton_{protocol}_ms"] = round(ms, 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"size": [height, width], "classes": c, **cpu_description(), "rows": rows}, indent=1))
    columns = ["bytes_per_frame", "host_ms", "triton_http_ms", "triton_grpc_ms"]
    print("\n| output | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for kind, row in rows.items():
        print(f"| {kind} | " + " | ".join(str(row.get(col, "-")) for col in columns) + " |")


if __name__ == "__main__":
    main()
