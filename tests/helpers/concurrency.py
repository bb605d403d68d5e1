"""Running test workers in threads at once (standard library only: the torch-free tests use it)."""

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
