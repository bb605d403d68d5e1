"""Running test workers in threads at once (standard library only: the torch-free tests use it)."""

import signal
import threading
from collections.abc import Callable


def run_in_threads(work: Callable[[int], object], count: int) -> None:
    """Runs ``work(0)``, ..., ``work(count - 1)`` each in its own thread, all started before any
    is joined (so they overlap), and returns once every one has finished."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def default_ctrl_c() -> None:
    """``preexec_fn`` of a child that must react to SIGINT like a program started from a terminal:
    a job started in the background of a non-interactive shell (a CI script, ``cmd &``) inherits
    SIGINT ignored, and Python then installs no Ctrl-C handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
