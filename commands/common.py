"""What every command module shares: the one-line failure for argument problems found late, and
the process set-up of commands that run the eager PyTorch model."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit with status 2 (for problems the option checks cannot see)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


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
