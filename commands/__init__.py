"""The commands of ``pem-deploy``, one module per area; :func:`register` adds them to the app.

Each command only parses its arguments, calls one function of the packages and prints; the
function of command ``NAME`` is ``<module>.NAME_command`` (``-`` as ``_``), which
``tests/cli/runtime_only/test_command_shape.py`` checks (and that each function, ``def`` to end,
stays within 40 lines). A command with many flags takes option groups, frozen dataclasses of
options (:mod:`commands.groups`; those several commands share are in :mod:`commands.options`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer


def _commands() -> dict[str, Callable[..., Any]]:
    """Every command by name, in the order ``--help`` lists them."""
    from commands import demo, device, export, model, runtime

    return {
        "info": model.info_command,
        "infer": runtime.infer_command,
        "ros2": runtime.ros2_command,
        "make-synthetic": model.make_synthetic_command,
        "train": model.train_command,
        "eval": model.eval_command,
        "export": export.export_command,
        "package": export.package_command,
        "build": device.build_command,
        "calibrate": export.calibrate_command,
        "check": export.check_command,
        "verify": device.verify_command,
        "bench": runtime.bench_command,
        "demo": demo.demo_command,
    }


def register(app: typer.Typer) -> None:
    """Add every command to ``app``, in the order ``--help`` lists them."""
    for name, function in _commands().items():
        app.command(name, cls=getattr(function, "command_class", None))(function)
