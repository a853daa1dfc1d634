"""Tiny synthetic training runs for tests/test_train.py, importable and runnable as a script.

As a script it trains in its own process, so the tests can SIGKILL it mid-epoch or start it under
`torchrun --nproc_per_node=2`; each rank then saves its final state_dict and metrics to --result-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from basisn.basis import to_basisn
from basisn.train import TrainConfig, cleanup_distributed, fit, init_distributed

NUM_CLASSES = 4
IMAGE_SHAPE = (1, 6, 6)


class SyntheticLoader:
    """Batches of a fixed labelled dataset; an epoch's batches are a pure function of (seed, epoch, rank).

    Train: a per-epoch permutation, padded to a multiple of world_size and sharded like DistributedSampler, plus
    per-batch input noise (stand-in for augmentation). Test: disjoint unpadded shards, no noise.
    """

    def __init__(
        self, size: int, batch_size: int, *, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        rule = torch.randn(math.prod(IMAGE_SHAPE), NUM_CLASSES, generator=torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(1000 + seed if train else 2000 + seed)
        self.images = torch.randn(size, *IMAGE_SHAPE, generator=generator)
        self.labels = (self.images.flatten(1) @ rule).argmax(1)  # one rule for train and test: learnable
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        padded = -(-n // self.world_size) * self.world_size
        return order.repeat(2)[:padded][self.rank :: self.world_size]

    def __len__(self) -> int:
        return -(-len(self._indices()) // self.batch_size)

    def __iter__(self):
        indices = self._indices()
        for number, start in enumerate(range(0, len(indices), self.batch_size)):
            idx = indices[start : start + self.batch_size]
            images = self.images[idx]
            if self.train:
                noise = torch.Generator().manual_seed(
                    ((self.seed * 1009 + self.epoch) * 1009 + self.rank) * 1009 + number
                )
                images = images + 0.1 * torch.randn(images.shape, generator=noise)
            yield images, self.labels[idx]


class TinyNet(nn.Module):
    """Conv + BatchNorm (buffers) + Dropout (consumes the global RNG, so resume must restore it) + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(IMAGE_SHAPE[0], 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8 * IMAGE_SHAPE[1] * IMAGE_SHAPE[2], NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).flatten(1)))


def make_model(seed: int = 0, basisn: bool = False, groups: int = 1, assignment: str = "fixed") -> nn.Module:
    """The tiny net, or its BasisN version (one shared basis rebuilt into both layers by a forward pre-hook)."""
    torch.manual_seed(seed)
    model = TinyNet()
    if basisn:
        settings = dict(n_basis=6, segment_len=9, coef_bits=4, basis_bits=8, groups=groups, assignment=assignment)
        model, _ = to_basisn(model, **settings)
    return model


# the parallelization-aware options (basisn.parallel): 18 steps, hardening after step 9, 2 + 1 step phases
PARALLEL_MODEL = dict(basisn=True, groups=3, assignment="learned")
PARALLEL_CONFIG = dict(group_lasso=0.5, harden_at=0.5, alternate={"coef_steps": 2, "basis_steps": 1})


def make_loaders(seed: int = 0, rank: int = 0, world_size: int = 1) -> tuple[SyntheticLoader, SyntheticLoader]:
    """96 train samples in batches of 16 (6 steps/epoch single-process); 37 test samples (odd: uneven shards)."""
    train = SyntheticLoader(96, 16 // world_size, train=True, seed=seed, rank=rank, world_size=world_size)
    test = SyntheticLoader(37, 8, train=False, seed=seed, rank=rank, world_size=world_size)
    return train, test


def make_config(**overrides) -> TrainConfig:
    values = dict(epochs=3, lr=0.05, warmup_epochs=1, weight_decay=1e-4, label_smoothing=0.1, log_interval=2)
    return TrainConfig(**(values | overrides))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--result-dir", required=True)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--basisn", action="store_true")
    parser.add_argument("--parallel", action="store_true", help="learned assignment + alternating phases")
    args = parser.parse_args()
    torch.set_num_threads(1)  # bit-identical results between the runs that a test compares

    rank, world_size, _, device = init_distributed()
    try:
        train, test = make_loaders(rank=rank, world_size=world_size)
        model = make_model(**PARALLEL_MODEL) if args.parallel else make_model(basisn=args.basisn)
        config = make_config(**PARALLEL_CONFIG) if args.parallel else make_config()

        def maybe_die(step: int) -> None:
            if step == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

        metrics = fit(model, train, test, config, args.out_dir, device=device, on_step=maybe_die)
        result_dir = Path(args.result_dir)
        result_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), result_dir / f"state_rank{rank}.pt")
        (result_dir / f"metrics_rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    sys.exit(main())
