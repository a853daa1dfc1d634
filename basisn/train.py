"""The one training loop: the dense baseline and the BasisN fine-tune (docs/method.md §1.2, steps 1 and 3).

Modelled on torchvision's references/classification/train.py and kept as plain: SGD (Nesterov) with a linear
warm-up then cosine decay to 0, stepped per iteration; label-smoothed cross-entropy; optional knowledge distillation
from a frozen teacher; bf16 autocast on CUDA, channels_last (NHWC) everywhere; DistributedDataParallel under
`torchrun --nproc_per_node=K`; a checkpoint after every epoch, from which a rerun resumes.

Resume is exact: a checkpoint holds everything the next epoch depends on (weights, optimizer and scheduler state,
the RNG states of every rank, the epoch number; the loaders are pure functions of the epoch via `set_epoch`), so a
run killed mid-epoch restarts that epoch from the last checkpoint and ends with the same weights as an
uninterrupted run. A checkpoint written with another config is never resumed: runs are not silently mixed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from basisn import parallel
from basisn.atomic import atomic_torch_save, atomic_write_json

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
CHECKPOINT_FORMAT = "basisn-train/1"

Batches = Iterable[tuple[Tensor, Tensor]]


class CheckpointMismatchError(RuntimeError):
    """out_dir holds a checkpoint of another run (other config, world size or data): refuse to mix them."""


# --------------------------------------------------------------------------------------------------------------
# Configuration.
# --------------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require(field: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{field}={value!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result; a checkpoint is resumed only under an equal config.

    kd_alpha weighs the distillation term (0: plain cross-entropy, no teacher needed); amp (bf16 autocast) and
    channels_last (NHWC) applies on every device; grad_clip is a max global gradient norm (None: no clipping).
    group_lasso / harden_at drive a learned group assignment (used only while the model has unassigned segments)
    and alternate ({coef_steps, basis_steps} or None: joint) the alternating optimisation (basisn.parallel).
    """

    epochs: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    log_interval: int = 10
    compile: bool = False
    grad_clip: float | None = None
    group_lasso: float = 0.0
    harden_at: float = 0.25
    alternate: dict | None = None

    def __post_init__(self) -> None:
        _require("epochs", self.epochs, _is_int(self.epochs) and self.epochs >= 1, "an integer >= 1")
        _require("lr", self.lr, _is_number(self.lr) and self.lr > 0, "a finite number > 0")
        m = self.momentum
        _require("momentum", m, _is_number(m) and 0 <= m < 1, "a number in [0, 1)")
        _require("nesterov", self.nesterov, isinstance(self.nesterov, bool), "true or false")
        _require(
            "nesterov", self.nesterov, not (self.nesterov and self.momentum == 0), "false when momentum is 0 (SGD)"
        )
        wd = self.weight_decay
        _require("weight_decay", wd, _is_number(wd) and wd >= 0, "a finite number >= 0")
        ls = self.label_smoothing
        _require("label_smoothing", ls, _is_number(ls) and 0 <= ls <= 1, "a number in [0, 1]")
        we = self.warmup_epochs
        _require(
            "warmup_epochs", we, _is_int(we) and 0 <= we <= self.epochs, f"an integer in [0, epochs={self.epochs}]"
        )
        a = self.kd_alpha
        _require("kd_alpha", a, _is_number(a) and 0 <= a <= 1, "a number in [0, 1]")
        t = self.kd_temperature
        _require("kd_temperature", t, _is_number(t) and t > 0, "a finite number > 0")
        for flag in ("amp", "channels_last", "compile"):
            _require(flag, getattr(self, flag), isinstance(getattr(self, flag), bool), "true or false")
        _require("seed", self.seed, _is_int(self.seed) and 0 <= self.seed < 2**63, "an integer in [0, 2**63)")
        li = self.log_interval
        _require("log_interval", li, _is_int(li) and li >= 1, "an integer >= 1")
        gc = self.grad_clip
        _require("grad_clip", gc, gc is None or (_is_number(gc) and gc > 0), "null or a finite number > 0")
        gl = self.group_lasso
        _require("group_lasso", gl, _is_number(gl) and gl >= 0, "a finite number >= 0")
        ha = self.harden_at
        _require("harden_at", ha, _is_number(ha) and 0 < ha <= 1, "a number in (0, 1]")
        problem = parallel.check_alternate(self.alternate)
        _require("alternate", self.alternate, problem is None, problem or "")
        if self.alternate is not None:  # a plain dict in a fixed key order: compared and saved in checkpoints
            object.__setattr__(self, "alternate", {k: self.alternate[k] for k in parallel.ALTERNATE_KEYS})


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier for optimizer step `step` (0-based): linear warm-up to 1, then cosine to 0.

    A closed form of the step count alone, so a resumed scheduler continues exactly where it stopped.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return 1.0
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------------------------
# Determinism and distribution.
# --------------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), python `random` and numpy, and ask torch for deterministic kernels.

    warn_only: an op without a deterministic kernel warns instead of stopping training.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read at its first use
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN (a debugging aid that catches reads of
    # uninitialized memory); results do not depend on it, and it costs a memset per allocation, which made
    # CPU training steps measurably slower (docs/benchmarks.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def init_distributed() -> tuple[int, int, int, torch.device]:
    """(rank, world_size, local_rank, device) from torchrun's environment; a plain run is rank 0 of 1.

    Starts the process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1; each process uses GPU `local_rank`.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return rank, world_size, local_rank, device


def cleanup_distributed() -> None:
    """End the process group if one was started (safe to call in a plain run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _rng_state(device: torch.device) -> dict:
    """This process's RNG states as tensors and plain Python data (loadable with weights_only=True)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": dict(
            numpy_state,
            state=dict(numpy_state["state"], key=torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))),
        ),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        dict(numpy_state, state=dict(numpy_state["state"], key=numpy_state["state"]["key"].numpy().astype(np.uint32)))
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as DDP itself does before each forward.

    Done after each epoch so that evaluation and the checkpoint see one model, and all ranks end identical.
    """
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


# --------------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Batches,
    num_classes: int,
    device: torch.device | str | None = None,
    channels_last: bool = False,
) -> dict:
    """Accuracy, mean cross-entropy (no label smoothing), per-class accuracy (NaN for a class with no sample), count.

    Under a started process group every rank must call it with its own disjoint shard of the test set: counts are
    summed over ranks, so each sample counts once. The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
    correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            per_class = F.one_hot(labels, num_classes)  # summed one-hot: deterministic, unlike bincount on CUDA
            total += per_class.sum(0).double()
            correct += per_class[logits.argmax(1) == labels].sum(0).double()
    finally:
        model.train(was_training)
    stats = torch.cat([loss_sum, correct, total])
    if _rank_and_world_size()[1] > 1:
        dist.all_reduce(stats)
    loss_sum, correct, total = stats[0].item(), stats[1 : 1 + num_classes].cpu(), stats[1 + num_classes :].cpu()
    count = int(total.sum().item())
    if count == 0:
        raise ValueError("the evaluation loader yielded no samples")
    return {
        "accuracy": float(correct.sum().item() / count),
        "loss": loss_sum / count,
        "per_class": [float(c / t) if t > 0 else float("nan") for c, t in zip(correct.tolist(), total.tolist())],
        "count": count,
    }


# --------------------------------------------------------------------------------------------------------------
# Checkpoints and metrics.
# --------------------------------------------------------------------------------------------------------------
def _check_resumable(checkpoint: Any, path: Path, expected: dict) -> None:
    """Refuse a checkpoint of another run, naming every field that differs."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a basisn training checkpoint (format {CHECKPOINT_FORMAT!r}); delete {path.parent} or "
            "choose another out_dir"
        )
    saved = dict(
        checkpoint["config"], world_size=checkpoint["world_size"], steps_per_epoch=checkpoint["steps_per_epoch"]
    )
    missing = object()
    differing = [
        f"{key} (checkpoint {saved.get(key, '<absent>')!r}, now {expected.get(key, '<absent>')!r})"
        for key in sorted(saved.keys() | expected.keys())
        if saved.get(key, missing) != expected.get(key, missing)
    ]
    if differing:
        raise CheckpointMismatchError(
            f"{path} belongs to another run, refusing to resume from it; differing: {', '.join(differing)}. "
            f"Delete {path.parent} to start over, or change out_dir."
        )


def _save_checkpoint(path: Path, payload: dict, device: torch.device, rank: int, world_size: int) -> None:
    """Rank 0 writes `payload` plus every rank's RNG state, atomically; all ranks wait until it is on disk."""
    rng = _rng_state(device)
    if world_size > 1:
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(rng, gathered, dst=0)
    else:
        gathered = [rng]
    if rank == 0:
        atomic_torch_save(dict(payload, rng=gathered), path)
    if world_size > 1:
        dist.barrier()


def _json_ready(value: Any) -> Any:
    """NaN (a class absent from the test set) becomes null: metrics.json stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------------------------------
def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T² · KL(softmax(teacher/T) || softmax(student/T)), batch mean (Hinton et al.; T² keeps gradients' scale)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2


def _show_progress_bar(rank: int) -> bool:
    return rank == 0 and sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true"


def _harden(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, log: Callable[[str], None]) -> bool:
    """Harden a learned group assignment (basisn.parallel.harden); True once no segment is unassigned."""
    assigned = parallel.harden(model, optimizer)
    log(f"step {step}: learned group assignment hardened ({assigned} segments assigned to one group each)")
    return not parallel.assignment_pending(model)


def fit(
    model: nn.Module,
    train_loader: Batches,
    test_loader: Batches,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    teacher: nn.Module | None = None,
    device: torch.device | str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train `model` in place (left on `device`, unwrapped), resuming from out_dir/checkpoint.pt if there is one.

    Writes out_dir/checkpoint.pt after every epoch and out_dir/metrics.json at the end (rank 0 only); returns the
    metrics on every rank. `teacher` (frozen, only run in eval mode) is used when config.kd_alpha > 0.
    `on_step(global_step)` is called after every optimizer step.
    """
    if config.kd_alpha > 0 and teacher is None:
        raise ValueError(f"TrainConfig.kd_alpha={config.kd_alpha} needs a teacher model; pass teacher= or kd_alpha=0")
    rank, world_size = _rank_and_world_size()
    device = torch.device(device) if device is not None else _default_device()
    on_cuda = device.type == "cuda"
    if on_cuda and device.index is None:  # DDP and the per-device RNG state need the index
        device = torch.device("cuda", torch.cuda.current_device())
    use_amp = config.amp and on_cuda
    # channels_last on every device: oneDNN's NHWC convolutions made the default model's CPU training step
    # about 1.7x faster (docs/benchmarks.md), and cuDNN's are the fast ones on GPUs
    channels_last = config.channels_last
    use_kd = teacher is not None and config.kd_alpha > 0
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError("the train loader yields no batch")

    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    if config.alternate is not None:
        parallel.basis_parameter(model)  # refuses a model without a basis, before any work
    seed_everything(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),  # one entry per tensor, even one shared by many layers (the BasisN basis)
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    warmup_steps, total_steps = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch
    scheduler = LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))
    hardening_step = parallel.harden_step(config.harden_at, total_steps)

    run_settings = dict(dataclasses.asdict(config), world_size=world_size, steps_per_epoch=steps_per_epoch)
    start_epoch, global_step, history, num_classes = 0, 0, [], None
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        _check_resumable(checkpoint, checkpoint_path, run_settings)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, global_step = checkpoint["epoch"], checkpoint["global_step"]
        history, num_classes = list(checkpoint["history"]), checkpoint["num_classes"]
        _set_rng_state(checkpoint["rng"][rank], device)
        log(f"resuming from {checkpoint_path} after epoch {start_epoch}/{config.epochs}")
    pending = parallel.assignment_pending(model)  # learned group assignment, not hardened yet
    if pending and global_step >= hardening_step:  # cannot happen after a step of this loop; kept for safety
        pending = not _harden(model, optimizer, global_step, log)

    # DDP hooks gradients, not layers: parameters shared by many layers (the BasisN basis, rebuilt into every
    # layer's weight by a forward pre-hook on the root module) are all-reduced once, like any other.
    train_model: nn.Module = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    if use_kd:
        teacher_was_training = teacher.training
        teacher.to(device).eval()
        if channels_last:
            teacher.to(memory_format=torch.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    show_bar = _show_progress_bar(rank)
    last_test: dict | None = None

    for epoch in range(start_epoch, config.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        train_model.train()
        started = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, samples (this rank)
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show_bar)
        for step, (images, labels) in enumerate(bar, 1):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = train_model(images)
                loss = criterion(logits, labels)
                if use_kd:
                    with torch.no_grad():
                        teacher_logits = teacher(images)
                    kd = distillation_loss(logits, teacher_logits, config.kd_temperature)
                    loss = (1 - config.kd_alpha) * loss + config.kd_alpha * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.alternate is not None:  # SGD skips a parameter without a gradient: no momentum, no decay
                for frozen in parallel.frozen_this_step(model, config.alternate, global_step):
                    frozen.grad = None
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            step_lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            if pending and parallel.in_coefficient_phase(config.alternate, global_step):
                parallel.group_lasso_prox(
                    model,
                    parallel.group_lasso_threshold(
                        config.group_lasso, global_step + 1, hardening_step, step_lr / config.lr
                    ),
                )
            global_step += 1
            if pending and global_step >= hardening_step:
                pending = not _harden(model, optimizer, global_step, log)
            num_classes = logits.shape[1]
            totals[0] += loss.detach().double() * len(labels)
            totals[1] += (logits.argmax(1) == labels).sum()
            totals[2] += len(labels)
            if on_step is not None:
                on_step(global_step)
            if show_bar and step % config.log_interval == 0:
                loss_sum, correct, seen = totals.tolist()
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.3g}"
                )
        bar.close()
        if world_size > 1:
            dist.all_reduce(totals)
            _broadcast_buffers(model)
        loss_sum, correct, seen = totals.tolist()
        train_seconds = time.perf_counter() - started
        last_test = evaluate(model, test_loader, num_classes, device, channels_last)
        history.append(
            dict(
                epoch=epoch + 1,
                lr=scheduler.get_last_lr()[0],
                train_loss=loss_sum / seen,
                train_accuracy=correct / seen,
                test_loss=last_test["loss"],
                test_accuracy=last_test["accuracy"],
                train_samples=int(seen),
                train_seconds=train_seconds,
                images_per_second=seen / train_seconds,
            )
        )
        payload = dict(
            format=CHECKPOINT_FORMAT,
            epoch=epoch + 1,
            global_step=global_step,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            history=history,
            config=dataclasses.asdict(config),
            world_size=world_size,
            steps_per_epoch=steps_per_epoch,
            num_classes=num_classes,
        )
        _save_checkpoint(checkpoint_path, payload, device, rank, world_size)
        h = history[-1]
        log(
            f"epoch {epoch + 1}/{config.epochs}: train loss {h['train_loss']:.4f} acc {h['train_accuracy']:.4f} | "
            f"test loss {h['test_loss']:.4f} acc {h['test_accuracy']:.4f} | lr {h['lr']:.3g} | "
            f"{train_seconds:.1f}s, {h['images_per_second']:.0f} img/s"
        )

    if use_kd:
        teacher.train(teacher_was_training)
    if parallel.assignment_pending(model):  # never leave an unassigned model (a checkpoint of an older run)
        _harden(model, optimizer, global_step, log)
        last_test = None
    if last_test is None:  # resumed a finished run: score the checkpoint's model once more
        last_test = evaluate(model, test_loader, num_classes, device, channels_last)
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_samples"] for h in history)
    metrics = dict(
        test_accuracy=last_test["accuracy"],
        test_loss=last_test["loss"],
        test_samples=last_test["count"],
        test_per_class=last_test["per_class"],
        train_loss=history[-1]["train_loss"],
        train_accuracy=history[-1]["train_accuracy"],
        epochs=config.epochs,
        global_steps=global_step,
        world_size=world_size,
        train_seconds=train_seconds,
        images_per_second=images / train_seconds if train_seconds > 0 else float("nan"),
        history=history,
        config=dataclasses.asdict(config),
    )
    if rank == 0:
        atomic_write_json(out_dir / METRICS_NAME, _json_ready(metrics), sort_keys=False, allow_nan=False)
    return metrics
