"""Activation ranges from calibration batches: min-max, percentile and entropy (KL divergence).

All three work on ``|x|`` (symmetric INT8) and give an ``amax`` per tensor; the INT8 scale is
``amax / 127``. Statistics are accumulated batch by batch in bounded memory: a running
maximum and a fixed-size histogram of ``|x|`` whose range doubles (merging neighbouring bins)
when a larger value arrives, so no activation is kept after its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from calib.errors import CalibrationError

Method = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
NUM_BINS = 2048
QUANT_LEVELS = 128  # |x| maps onto 0..127


class TensorStats:
    """Running ``max |x|`` and histogram of ``|x|`` (``bins`` bins over ``[0, top]``) of one tensor."""

    def __init__(self, bins: int = NUM_BINS, histogram: bool = True):
        self.bins = bins
        self.amax = 0.0
        self.top = 0.0
        self.hist = np.zeros(bins, np.float64) if histogram else None

    def update(self, values: np.ndarray) -> None:
        a = np.abs(np.asarray(values, np.float32)).ravel()
        if a.size == 0:
            return
        a = a[np.isfinite(a)]
        batch_max = float(a.max()) if a.size else 0.0
        self.amax = max(self.amax, batch_max)
        if self.hist is None or (batch_max == 0.0 and self.top == 0.0):
            if self.hist is not None:
                self.hist[0] += a.size
            return
        if self.top == 0.0:
            self.top = batch_max
        while batch_max > self.top:  # double the range: pairs of bins merge into one
            merged = self.hist.reshape(-1, 2).sum(1)
            self.hist = np.concatenate([merged, np.zeros(self.bins - merged.size)])
            self.top *= 2.0
        idx = np.minimum((a * (self.bins / self.top)).astype(np.int64), self.bins - 1)
        self.hist += np.bincount(idx, minlength=self.bins)

    def minmax(self) -> float:
        return self.amax

    def percentile(self, percentile: float = 99.99) -> float:
        """Smallest bin edge below which ``percentile`` % of the values lie."""
        if self.hist is None or self.hist.sum() == 0:
            return self.amax
        cdf = np.cumsum(self.hist) / self.hist.sum()
        index = int(np.searchsorted(cdf, percentile / 100.0))
        return min(self.amax, (index + 1) * self.top / self.bins)

    def entropy(self, stride: int = 16) -> float:
        """TensorRT-style entropy calibration: the clip threshold minimising KL(P || Q).

        For candidate thresholds ``i`` bins (from 128 to all bins, every ``stride``), P is the
        histogram up to ``i`` with the clipped tail added to its last bin, Q is P quantised onto
        128 levels and spread back over the non-empty bins of each level.
        """
        hist = self.hist
        if hist is None or hist.sum() == 0 or self.top == 0.0:
            return self.amax
        used = int(np.nonzero(hist)[0].max()) + 1
        if used <= QUANT_LEVELS:
            return self.amax
        best, best_i = np.inf, used
        for i in [*list(range(QUANT_LEVELS, used, stride)), used]:
            p = hist[:i].copy()
            p[-1] += hist[i:].sum()
            nonzero = p > 0
            # Q: merge i bins into 128 levels, spread each level's mass over its non-empty bins.
            edges = np.linspace(0, i, QUANT_LEVELS + 1).astype(np.int64)
            level = np.repeat(np.arange(QUANT_LEVELS), np.diff(edges))
            mass = np.bincount(level, weights=hist[:i], minlength=QUANT_LEVELS)
            count = np.bincount(level, weights=nonzero.astype(np.float64), minlength=QUANT_LEVELS)
            q = np.where(nonzero, mass[level] / np.maximum(count[level], 1.0), 0.0)
            ps, qs = p.sum(), q.sum()
            if qs == 0:
                continue
            pn, qn = p[nonzero] / ps, q[nonzero] / qs
            qn = np.maximum(qn, 1e-12)
            kl = float(np.sum(pn * np.log(pn / qn)))
            if kl < best:
                best, best_i = kl, i
        return min(self.amax, best_i * self.top / self.bins)

    def threshold(self, method: Method, percentile: float = 99.99) -> float:
        if method == "minmax":
            return self.minmax()
        if method == "percentile":
            return self.percentile(percentile)
        if method == "entropy":
            return self.entropy()
        raise CalibrationError(f"--calib-method {method}: choose one of {', '.join(METHODS)}")


class RangeCollector:
    """Accumulates :class:`TensorStats` for named tensors over calibration batches."""

    def __init__(self, names: Iterable[str], method: Method):
        if method not in METHODS:
            raise CalibrationError(f"--calib-method {method}: choose one of {', '.join(METHODS)}")
        self.method = method
        self.stats = {name: TensorStats(histogram=method != "minmax") for name in names}

    def update(self, tensors: Mapping[str, np.ndarray]) -> None:
        for name, value in tensors.items():
            if name in self.stats:
                self.stats[name].update(value)

    def amax(self, percentile: float = 99.99) -> dict[str, float]:
        """``amax`` per tensor for the collector's method."""
        return {name: s.threshold(self.method, percentile) for name, s in self.stats.items()}
