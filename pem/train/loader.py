"""Deterministic stream of augmented training batches.

The ``c``-th training sample (counting across steps, micro-batches and epochs) is a pure
function of ``(seed, c)``: its dataset index comes from a per-epoch permutation seeded by
``(seed, epoch)`` and its augmentation from a generator seeded by ``(seed, c)``. Resuming at
any step therefore reproduces exactly the batches of an uninterrupted run, with or without
worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pem.data.common import SegmentationDataset
from pem.data.mapper import Batch, Target, Task, collate, make_target
from pem.data.transforms import AugmentConfig, augment


class TrainStream(torch.utils.data.Dataset):
    """Indexable by the global sample counter ``c``; ``stream[c]`` = (image (H, W, 3) uint8, target)."""

    def __init__(self, dataset: SegmentationDataset, task: Task, augment_cfg: AugmentConfig, seed: int):
        if len(dataset) == 0:
            raise ValueError("empty training set")
        self.dataset = dataset
        self.task = task
        self.augment_cfg = augment_cfg
        self.seed = seed
        self._perm_epoch = -1
        self._perm = np.arange(0)

    def dataset_index(self, counter: int) -> int:
        """Dataset index of sample ``counter``."""
        n = len(self.dataset)
        epoch = counter // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch, 7]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[counter % n])

    def __len__(self) -> int:  # pragma: no cover - unbounded stream, sized only for DataLoader
        return 2**62

    def __getitem__(self, counter: int) -> tuple[np.ndarray, Target]:
        sample = self.dataset[self.dataset_index(counter)]
        sample = augment(sample, self.augment_cfg, np.random.default_rng([self.seed, counter, 11]))
        return sample.image, make_target(sample, self.task)


class _Collate:
    def __init__(self, pixel_mean: Sequence[float], min_size: tuple[int, int]):
        self.pixel_mean = tuple(pixel_mean)
        self.min_size = min_size

    def __call__(self, items: list[tuple[np.ndarray, Target]]) -> Batch:
        return collate(items, self.pixel_mean, min_size=self.min_size)


def micro_batches(
    stream: TrainStream,
    first_counter: int,
    micro_batch: int,
    count: int,
    pixel_mean: Sequence[float],
    num_workers: int = 0,
    stride: int | None = None,
) -> Iterator[Batch]:
    """``count`` micro-batches of ``micro_batch`` samples; the ``i``-th starts at sample
    ``first_counter + i * stride`` (``stride`` defaults to ``micro_batch``: consecutive batches;
    a distributed rank reads its slice of every global micro-batch with a larger stride).

    Batches are padded to at least the crop size (multiples of 32) so shapes stay constant.
    """
    collate_fn = _Collate(pixel_mean, stream.augment_cfg.crop_size)
    stride = micro_batch if stride is None else stride
    if num_workers <= 0:
        for i in range(count):
            start = first_counter + i * stride
            yield collate_fn([stream[c] for c in range(start, start + micro_batch)])
        return
    counters = [first_counter + i * stride + j for i in range(count) for j in range(micro_batch)]
    loader = torch.utils.data.DataLoader(
        stream, batch_size=micro_batch, sampler=counters, num_workers=num_workers, collate_fn=collate_fn
    )
    yield from loader
