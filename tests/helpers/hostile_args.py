"""Checkpoints, exports and output checks the hostile-argument corpus (tests/cli/hostile_args) shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contract.fs import STAGING_PREFIX

TINY = "cityscapes-semantic-tiny"


def no_partial_files(folder: Path) -> list[Path]:
    """Temporary, staging or 0-byte files under ``folder`` (should be none)."""
    if not folder.exists():
        return []
    bad = []
    for path in folder.rglob("*"):
        name = path.name
        if (
            name.endswith(".tmp")
            or name.startswith(STAGING_PREFIX)
            or (path.is_file() and path.stat().st_size == 0)
        ):
            bad.append(path)
    return bad


def copy_checkpoint(src: Path, dst_dir: Path, weights: bytes | None = None, meta: Any = None) -> Path:
    """A copy of checkpoint ``src`` in ``dst_dir``, with other ``weights`` bytes or config ``meta``."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes() if weights is None else weights)
    cfg = src.with_suffix(".json").read_text() if meta is None else meta
    dst.with_suffix(".json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return dst


def fast_export(out: Path, *extra: str) -> list[str]:
    """The arguments of the quickest ``pem-deploy export`` of the tiny preset into ``out``."""
    return [
        "export", "--preset", TINY, "--height", "64", "--width", "64", "--simplifier", "none",
        "--exporter", "torchscript", "--out", str(out), *extra,
    ]  # fmt: skip
