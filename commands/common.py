"""What every command module shares: the one-line failure for argument problems found late, and
the process set-up of commands that run the eager PyTorch model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit with status 2 (for problems the option checks cannot see)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def missing_files_in_own_words(
    *kinds: type[OSError],
) -> Iterator[None]:
    """A missing file or folder that the model code reports (``kinds``, default ``FileNotFoundError``
    and ``NotADirectoryError``, often with a message of its own) as ``error: <its message>``, exit
    2; typed errors (:class:`~contract.errors.PemDeployError`) go to the CLI's handler as they are."""
    caught: tuple[type[OSError], ...] = kinds or (FileNotFoundError, NotADirectoryError)
    try:
        yield
    except caught as exc:
        fail(str(exc))


def prepare_eager_torch(threads: int | None) -> None:
    """Set-up of a command that runs the eager PyTorch model (train, eval, export, calibrate,
    check, demo): ``threads`` intra-op threads (None: torch's default) and the malloc policy
    (``PEM_DEPLOY_MALLOC``, default ``tuned``: glibc keeps large freed buffers instead of
    page-faulting them in again on every forward; see ``pem/malloc.py``)."""
    import torch

    from pem.malloc import apply_malloc_policy

    apply_malloc_policy()
    if threads:
        torch.set_num_threads(threads)


# Which extra provides each optional top-level module (pyproject.toml), for the one-line message a
# command gives when it runs in an install without it (e.g. the torch-free ``.[ort]`` runtime venv).
_EXTRA_OF_MODULE = {
    "safetensors": "model",
    "scipy": "model",
    "tqdm": "model",
    "cityscapesscripts": "train",
    "onnx": "export",
    "onnxscript": "export",
    "onnxslim": "export",
    "onnxruntime": "ort",
    "rosbags": "ros",
    "openvino": "openvino",
}
# The extra each torch command needs as a whole (its later steps import the rest of it).
_EXTRA_OF_COMMAND = {"info": "model", "make-synthetic": "train", "train": "train", "eval": "train"}
TORCH_INSTALL = "pip install torch==2.13.0"  # the README's pin; on a GPU box pick the CUDA build


def missing_dependency_message(command: str | None, exc: ImportError) -> str | None:
    """One line for a command that needs a package this install lacks, with the install command.

    ``None`` when ``exc`` is not about an optional dependency of the project (a real bug then,
    which keeps its traceback). Torch is named first: the torch-free runtime install
    (``pip install -e ".[ort]"``) has none of the model, export and training code's packages.
    """
    module = (exc.name or "").split(".")[0]
    what = f"pem-deploy {command}" if command else "this command"
    if module in ("torch", "torchvision"):
        extra = _EXTRA_OF_COMMAND.get(command or "", "export")
        return (
            f"{what} needs PyTorch and the '{extra}' extra (this install is the torch-free runtime): "
            f'{TORCH_INSTALL} && pip install -e ".[{extra}]"'
        )
    extra = _EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return f"{what} needs the Python package {module} (the '{extra}' extra): pip install -e \".[{extra}]\""
