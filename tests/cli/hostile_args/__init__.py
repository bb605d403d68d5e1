"""Hostile-input corpus for configs, checkpoints, CLI numbers and every writer (issue 11), one file
per thing attacked.

Every case is generated from a table and asserts its exact outcome through ``cli.app``: exit code
2, exactly one ``error: ...`` line naming the thing at fault, no traceback (``result.exception``
is ``SystemExit``), or correct acceptance. Then file-system faults (a full tmpfs, a read-only
mount; skipped with the reason where mounting is not allowed) and a kill -9 sweep of export,
calibrate and train in subprocesses: nothing partial may be left, and ``train --resume`` after
a kill must finish the run.
"""
