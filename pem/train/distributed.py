"""Former home of the distributed helpers, kept so that ``pem.train.distributed`` imports still work.

The helpers live in :mod:`pem.distributed`, beside the evaluation that uses them as much as the
trainer does (so ``pem.evaluation`` needs nothing from ``pem.train``). New code imports
:mod:`pem.distributed`; this module only re-exports its public names (the same objects).
"""

from __future__ import annotations

from pem.distributed import *  # noqa: F403  (the same objects, by pem.distributed's __all__)
from pem.distributed import __all__  # noqa: F401
