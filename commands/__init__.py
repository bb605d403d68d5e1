"""The commands of ``pem-deploy``, one module per area; :func:`register` adds them to the app.

Each command only parses its arguments, calls into the packages and prints.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add every command to ``app``, in the order ``--help`` lists them."""
    from commands import demo, device, export, model, runtime

    app.command("info")(model.info)
    app.command("infer")(runtime.infer)
    app.command("ros2")(runtime.ros2_command)
    app.command("make-synthetic")(model.make_synthetic_command)
    app.command("train")(model.train)
    app.command("eval")(model.eval_command)
    app.command("export")(export.export_command)
    app.command("build")(device.build_command)
    app.command("calibrate")(export.calibrate_command)
    app.command("check")(export.check_command)
    app.command("verify")(device.verify_command)
    app.command("bench")(runtime.bench_command)
    app.command("demo")(demo.demo_command)
