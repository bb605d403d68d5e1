"""README.md and calib/README.md as a new user reads them: every fenced Python snippet and every
``pem-deploy`` command line runs here on a CPU, in document order in one working folder, so the
documentation cannot drift from the code unnoticed.

What runs and what does not:

* Python snippets (```` ```python ````) run with ``exec`` in document order; a command line runs
  through the CLI in-process (``CliRunner``) and must exit 0.
* Synopsis lines (``[--flag ...]``, ``a|b`` alternatives, CAPITAL placeholders such as ``CKPT`` or
  ``DIR``) are not run; for them, as for every other ``pem-deploy`` line, the command must exist
  and accept every ``--flag`` the line names (this catches renamed or removed options).
* ``SKIP`` below lists what cannot run on a CPU-only CI machine, each with its reason (TensorRT,
  a GPU, ROS 2, a camera, data the user brings). A snippet can also opt out in the Markdown
  itself with ``<!-- snippet: skip REASON -->`` on the line before its fence.
* ``SMALLER`` makes the heavy examples cheap where the example allows it (a smaller input size,
  fewer images or steps), each with its reason; anything else runs as written.

New README sections are picked up automatically: a new example either runs, or needs a line in
``SKIP`` / a marker, which is the point.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from cli import app

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "calib/README.md")
MARKER = re.compile(r"<!--\s*snippet:\s*skip\b\s*(.*?)\s*-->")

# Command lines that cannot run on a CPU-only CI machine, matched against the command as written.
SKIP: list[tuple[str, str]] = [
    (r"\.engine\b|--format engine|^pem-deploy build\b", "needs TensorRT and an NVIDIA GPU"),
    (r"--device cuda|CUDAExecutionProvider", "needs an NVIDIA GPU"),
    (r"^pem-deploy ros2\b", "needs a ROS 2 install (rclpy)"),
    (r"\.mcap\b|\.db3\b|_bag/", "needs a recorded ROS 2 bag (tests/runtime/test_ros_bags.py covers bags)"),
    (r"nvarguscamerasrc|/dev/video|rtsp://|appsink", "needs a camera"),
    (r"model_final\.(pth|pkl)", "an official checkpoint the user brings"),
    (r"/data/(cityscapes|ade20k)", "the full Cityscapes / ADE20K datasets"),
    (r"--load-reference ref\.npz", "a reference saved on another machine"),
]

# Heavy examples made cheap on a CPU: (pattern, replacement, why). Applied to command lines and
# Python snippets; everything else runs exactly as documented.
SMALLER: list[tuple[str, str, str]] = [
    (
        r"^pem-deploy demo$",
        "pem-deploy demo --quick",
        "the full demo takes minutes; --quick is the same path",
    ),
    (
        r"(--preset cityscapes-semantic-r50) (--out)",
        r"\1 --height 64 --width 128 \2",
        "a full-size (1024x2048) R50 export takes minutes and GBs",
    ),
    (r"--train 300 --val 50", "--train 4 --val 2", "300 images take ~20 s to draw"),
    (
        r"^(pem-deploy train --preset cityscapes-panoptic-tiny .*)--out runs/tiny\b(.*)$",
        r"\1--out runs/tiny-train\2 --iterations 2 --no-eval",
        "500 steps take minutes; runs/tiny holds the model the other examples use",
    ),
    (r"^(pem-deploy calibrate .*)$", r"\1 --calib-images 4 --eval-limit 2", "200 images take minutes"),
    (r"1024, 2048\)", "128, 256)", "full-size eager R50 inference takes minutes on a CPU"),
    (r"num_images=200", "num_images=4", "200 calibration images take minutes"),
    (r"iterations=50\b", "iterations=2", "timing, not measured here"),
]


@dataclass(frozen=True)
class Snippet:
    document: str
    line: int  # 1-based line of the fence (Python) or of the command
    kind: str  # "python" | "command"
    text: str
    skip: str | None = None  # reason, from a marker before the fence

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def _commands(block: str) -> list[tuple[int, str]]:
    """``pem-deploy`` command lines of a shell block: (offset of its line, the command), with
    continuation lines joined, ``&&`` chains split and comments removed."""
    found: list[tuple[int, str]] = []
    lines = block.split("\n")
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        while i + 1 < len(lines) and (
            text.rstrip().endswith("\\") or re.match(r"\s+\[", lines[i + 1])  # "    [--more ...]"
        ):
            i += 1
            text = text.rstrip().removesuffix("\\") + " " + lines[i].strip()
        i += 1
        code = re.split(r"\s#\s|\s#$|^#", text, maxsplit=1)[0].strip()
        for part in code.split("&&"):
            part = " ".join(part.split())
            if part.startswith("pem-deploy "):
                found.append((start, part))
    return found


def collect(document: str) -> list[Snippet]:
    """Every Python snippet and ``pem-deploy`` command of ``document``, in order."""
    snippets: list[Snippet] = []
    lines = (REPO / document).read_text().split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[i + 1 : end])
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        skip = (marker.group(1) or "marked skip") if marker else None
        if lang == "python":
            snippets.append(Snippet(document, start + 1, "python", body, skip))
        elif lang in ("", "bash", "sh", "shell", "console"):
            for offset, command in _commands(body):
                snippets.append(Snippet(document, start + 2 + offset, "command", command, skip))
        i = end + 1
    return snippets


SNIPPETS = [s for document in DOCUMENTS for s in collect(document)]
COMMANDS = [s for s in SNIPPETS if s.kind == "command"]


def is_synopsis(command: str) -> bool:
    """A usage line rather than a command: optional parts, alternatives or placeholders."""
    if re.search(r"\[|\||\.\.\.", command):
        return True
    return any(re.fullmatch(r"[A-Z][A-Z0-9_]*", word) for word in command.split()[2:])


def skip_reason(snippet: Snippet) -> str | None:
    if snippet.skip:
        return snippet.skip
    if snippet.kind == "command":
        for pattern, reason in SKIP:
            if re.search(pattern, snippet.text):
                return reason
    return None


def smaller(text: str) -> str:
    for pattern, replacement, _ in SMALLER:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


# -- every command line: the command exists and takes every flag it names (fast, in-process) ----

GROUP = typer.main.get_command(app)


@pytest.mark.parametrize("snippet", COMMANDS, ids=[s.id for s in COMMANDS])
def test_documented_command_and_flags_exist(snippet: Snippet) -> None:
    words = snippet.text.split()
    assert words[1] in GROUP.commands, f"{snippet.id}: no command {words[1]!r}"  # type: ignore[attr-defined]
    command = GROUP.commands[words[1]]  # type: ignore[attr-defined]
    known = {n for p in command.params if p.param_type_name == "option" for n in p.opts + p.secondary_opts}
    known.add("--help")
    text = re.split(r"[\s\[]--(?:\s|$)", snippet.text, maxsplit=1)[0]  # after a lone "--": another program's
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
        assert flag in known, f"{snippet.id}: pem-deploy {words[1]} has no {flag}: {snippet.text}"


def test_snippets_were_found() -> None:
    kinds = {(s.document, s.kind) for s in SNIPPETS}
    assert {("README.md", "python"), ("README.md", "command"), ("calib/README.md", "python")} <= kinds


def test_marker_opts_a_snippet_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "DOC.md"
    doc.write_text(
        "<!-- snippet: skip needs a GPU -->\n```python\nraise SystemExit\n```\n\n"
        "```bash\npem-deploy info --list\n```\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    first, second = collect("DOC.md")
    assert (first.kind, first.skip) == ("python", "needs a GPU")
    assert (second.kind, second.text, second.skip) == ("command", "pem-deploy info --list", None)


# -- the walk-through: runnable snippets in document order, in one working folder -------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    """The folder a reader works in: the trained tiny model where the README keeps it
    (``runs/tiny``, the quick default model), an image, a short video and the fleet example's inputs."""
    from pem.zoo import ensure_default_checkpoint
    from runtime.tools.compare.scenes import street_scene

    folder = tmp_path_factory.mktemp("readme")
    checkpoint = ensure_default_checkpoint("quick")
    (folder / "runs" / "tiny").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(checkpoint.with_suffix(suffix), folder / "runs" / "tiny" / f"model{suffix}")
    frame = np.ascontiguousarray(street_scene(256, 512, 0)[..., ::-1])  # RGB -> BGR file
    cv2.imwrite(str(folder / "frame.png"), frame)
    writer = cv2.VideoWriter(str(folder / "drive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 256))
    for _ in range(3):
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    _fleet_inputs(folder)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)


def _fleet_inputs(folder: Path) -> None:
    """What the fleet example (README, "Fleet") reads: a raw-head ``model.onnx`` (its
    ``keep_uncertain`` needs margins), a recorded drive ``drives/a.mcap`` with ``/front/image_raw``
    and a camera folder ``cam_front/``; the bag needs the 'ros' extra (rosbags)."""
    from tests.helpers import fleet_data

    fleet_data.raw_artifact(folder)
    fleet_data.write_images(folder / "cam_front", 5, 2)
    try:
        from rosbags.rosbag2 import StoragePlugin
    except ImportError:
        return
    bag = fleet_data.write_bag(folder / "drives-bag", StoragePlugin.MCAP, 4, 1)
    (folder / "drives").mkdir()
    next(bag.glob("*.mcap")).rename(folder / "drives" / "a.mcap")  # a bare MCAP file, as recorded
    shutil.rmtree(bag)


def _needs(snippet: Snippet) -> None:
    """Skip a snippet whose optional extra is not installed (CI installs them)."""
    if "runtime.io.fleet" in snippet.text:
        for module in ("ray", "pyarrow", "rosbags"):
            pytest.importorskip(module, reason=f"{snippet.id}: the 'fleet' and 'ros' extras ({module})")


RUNNABLE = [s for s in SNIPPETS if not (s.kind == "command" and is_synopsis(s.text))]
_done: set[str] = set()


@pytest.mark.slow
@pytest.mark.parametrize("snippet", RUNNABLE, ids=[s.id for s in RUNNABLE])
def test_snippet_runs(snippet: Snippet, workdir: Path) -> None:
    import torch

    reason = skip_reason(snippet)
    if reason:
        pytest.skip(f"{snippet.id}: {reason}")
    # One intra-op thread, as a reader on a shared CI machine should run it (README, "Training"):
    # commands run in this process and may have changed it.
    torch.set_num_threads(1)
    text = smaller(snippet.text)
    if snippet.kind == "python":
        _needs(snippet)
        exec(compile(text, snippet.id, "exec"), {"__name__": "__readme__"})
        return
    if text in _done:  # the same example shown twice (e.g. make-synthetic): its output is there
        pytest.skip(f"{snippet.id}: ran above")
    _done.add(text)
    result = CliRunner().invoke(app, shlex.split(text)[1:])
    assert result.exit_code == 0, f"{snippet.id}: {text}\n{result.output}"


def test_readme_paper_table_is_what_info_paper_prints() -> None:
    """The fidelity table is pasted from ``pem-deploy info --paper``: it must match it row by row."""
    result = CliRunner().invoke(app, ["info", "--paper"])
    assert result.exit_code == 0, result.output
    readme = (REPO / "README.md").read_text()
    for row in result.output.strip().splitlines()[2:]:
        assert row in readme, f"README's paper table lacks or differs from: {row}"
