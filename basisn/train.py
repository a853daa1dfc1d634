"""The one training loop: the dense baseline and the BasisN fine-tune (docs/method.md §1.2, steps 1 and 3).

Modelled on torchvision's references/classification/train.py and kept as plain: SGD (Nesterov) with a linear
warm-up then cosine decay to 0, stepped per iteration; label-smoothed cross-entropy; optional knowledge distillation
from a frozen teacher (`TeacherCache`: its logits computed once for every fine-tune that sees the same batches);
bf16 autocast (`amp`: on CUDA and on CPUs with native bf16, fp32 elsewhere), channels_last (NHWC) everywhere;
DistributedDataParallel under
`torchrun --nproc_per_node=K`; a checkpoint after every epoch, from which a rerun resumes.

Resume is exact: a checkpoint holds everything the next epoch depends on (weights, optimizer and scheduler state,
the RNG states of every rank, the epoch number; the loaders are pure functions of the epoch via `set_epoch`), so a
run killed mid-epoch restarts that epoch from the last checkpoint and ends with the same weights as an
uninterrupted run. A checkpoint written with another config is never resumed: runs are not silently mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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
AMP_MODES = ("auto", "on", "off")  # TrainConfig.amp: bf16 autocast where native / always / never

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

    kd_alpha weighs the distillation term (0: plain cross-entropy, no teacher needed); amp is bf16 autocast of the
    forward pass: "on", "off" (fp32), or "auto" (on where bf16 is native: CUDA, and CPUs with AMX or AVX-512-BF16,
    `autocast_enabled`); channels_last (NHWC) applies on every device; grad_clip is a max global gradient norm
    (None: no clipping).
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
    amp: str = "auto"
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
        _require("amp", self.amp, self.amp in AMP_MODES, " | ".join(AMP_MODES))
        for flag in ("channels_last", "compile"):
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


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX-512-BF16), where autocast pays off.

    Measured on the project's 2-core Xeon with AMX: a small-ResNet training step about 1.5x faster under bf16
    autocast than fp32 (docs/benchmarks.md); without these instructions oneDNN emulates bf16 and is slower than
    fp32. torch.cpu's probes are private API, so a torch without them counts as "no".
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def autocast_enabled(amp: str, device: torch.device) -> bool:
    """TrainConfig.amp on `device`: "on"/"off" as said, "auto" where bf16 is native (CUDA, `native_bf16_cpu`)."""
    if amp == "auto":
        return device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu())
    return amp == "on"


class TeacherCache(nn.Module):
    """A frozen distillation teacher whose logits are computed once per distinct input batch and replayed.

    Every fine-tune of a stage that distils from the same teacher over the same batches (the loaders' batches are
    pure functions of seed and epoch) needs the same teacher logits; this computes them for the first and hands
    the stored tensors to the others, bit-identical to recomputing them (the key is the batch's bytes, shape,
    dtype and the autocast state, so a different batch is never given another's logits). The cache lives on the
    CPU: a 4-epoch Fashion-MNIST fine-tune stores 240,000 x 10 logits, about 10 MB in fp32.
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher
        self.logits: dict[bytes, Tensor] = {}
        self.hits = self.misses = 0

    def forward(self, images: Tensor) -> Tensor:
        autocast = torch.is_autocast_enabled(images.device.type)
        head = f"{tuple(images.shape)}|{images.dtype}|{autocast}|{torch.get_autocast_dtype(images.device.type)}|"
        data = images.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
        key = hashlib.blake2b(head.encode() + data, digest_size=20).digest()
        if key in self.logits:
            self.hits += 1
            return self.logits[key].to(images.device)
        self.misses += 1
        logits = self.teacher(images)
        self.logits[key] = logits.detach().cpu()
        return logits


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
# The state of one fit() call.
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSetup:
    """What every epoch of one fit() call uses unchanged, so that the epoch and checkpoint code takes one argument.

    `model` is the unwrapped module (state dicts, clipping, hardening); `train_model` the one called forward
    (wrapped by DDP and/or torch.compile); `teacher` is None unless distilling (config.kd_alpha > 0).
    """

    config: TrainConfig
    model: nn.Module
    train_model: nn.Module
    teacher: nn.Module | None
    teacher_was_training: bool | None  # the teacher's mode before fit(), restored at the end
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    device: torch.device
    use_amp: bool
    steps_per_epoch: int
    hardening_step: int
    rank: int
    world_size: int
    show_bar: bool
    log: Callable[[str], None]
    on_step: Callable[[int], None] | None


@dataclass
class TrainingProgress:
    """Where a run stands: with the weights, optimizer, scheduler and RNG states, what a checkpoint restores.

    `pending` (a learned group assignment not hardened yet) is not saved: it is read off the model.
    """

    epoch: int = 0  # epochs completed
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    num_classes: int | None = None
    pending: bool = False


class EpochTotals(NamedTuple):
    """One epoch's training sums over all ranks, and its wall-clock time."""

    loss_sum: float
    correct: float
    seen: float
    train_seconds: float


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


def _write_checkpoint(path: Path, payload: dict, device: torch.device, rank: int, world_size: int) -> None:
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


def save_checkpoint(path: Path, setup: TrainingSetup, progress: TrainingProgress) -> None:
    """Checkpoint the run after epoch `progress.epoch`: everything the next epoch depends on, and the settings."""
    payload = dict(
        format=CHECKPOINT_FORMAT,
        epoch=progress.epoch,
        global_step=progress.global_step,
        model=setup.model.state_dict(),
        optimizer=setup.optimizer.state_dict(),
        scheduler=setup.scheduler.state_dict(),
        history=progress.history,
        config=dataclasses.asdict(setup.config),
        world_size=setup.world_size,
        steps_per_epoch=setup.steps_per_epoch,
        num_classes=progress.num_classes,
    )
    _write_checkpoint(path, payload, setup.device, setup.rank, setup.world_size)


def resume_from_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    run_settings: dict,
    device: torch.device,
    rank: int,
) -> TrainingProgress:
    """Load `path` into the model, optimizer, scheduler and this rank's RNGs, so the run continues exactly.

    Refuses (CheckpointMismatchError) a checkpoint whose config, world size or steps per epoch (`run_settings`)
    differ, before touching anything.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    _check_resumable(checkpoint, path, run_settings)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    progress = TrainingProgress(
        epoch=checkpoint["epoch"],
        global_step=checkpoint["global_step"],
        history=list(checkpoint["history"]),
        num_classes=checkpoint["num_classes"],
    )
    _set_rng_state(checkpoint["rng"][rank], device)
    return progress


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


def _training_device(device: torch.device | str | None) -> torch.device:
    """The device to train on, with its index: DDP and the per-device RNG state need it."""
    device = torch.device(device) if device is not None else _default_device()
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over every parameter tensor: one entry per tensor, even one shared by many layers (the BasisN basis)."""
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """Per-iteration linear warm-up then cosine decay to 0 (`lr_factor`) over the whole run."""
    warmup_steps, total_steps = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps))


def _wrap_for_training(model: nn.Module, config: TrainConfig, device: torch.device, world_size: int) -> nn.Module:
    """The module to call forward: DDP-wrapped under several processes, compiled if config.compile.

    DDP hooks gradients, not layers: parameters shared by many layers (the BasisN basis, rebuilt into every
    layer's weight by a forward pre-hook on the root module) are all-reduced once, like any other.
    """
    train_model: nn.Module = model
    if world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    return train_model


def _prepare_teacher(teacher: nn.Module | None, device: torch.device, channels_last: bool) -> bool | None:
    """Put the distillation teacher on `device` in eval mode; returns its train/eval mode, to restore at the end."""
    if teacher is None:
        return None
    was_training = teacher.training
    teacher.to(device).eval()
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return was_training


def _train_step(setup: TrainingSetup, global_step: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, float]:
    """Forward (with the distillation term), backward and one optimizer + scheduler step.

    Returns the logits, the loss and the learning rate the step used (the group-lasso ramp needs it).
    """
    config = setup.config
    with torch.autocast(setup.device.type, dtype=torch.bfloat16, enabled=setup.use_amp):
        logits = setup.train_model(images)
        loss = setup.criterion(logits, labels)
        if setup.teacher is not None:
            with torch.no_grad():
                teacher_logits = setup.teacher(images)
            kd = distillation_loss(logits, teacher_logits, config.kd_temperature)
            loss = (1 - config.kd_alpha) * loss + config.kd_alpha * kd
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.alternate is not None:  # SGD skips a parameter without a gradient: no momentum, no decay
        for frozen in parallel.frozen_this_step(setup.model, config.alternate, global_step):
            frozen.grad = None
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(setup.model.parameters(), config.grad_clip)
    step_lr = setup.scheduler.get_last_lr()[0]
    setup.optimizer.step()
    setup.scheduler.step()
    return logits, loss, step_lr


def _shrink_groups(setup: TrainingSetup, global_step: int, step_lr: float) -> None:
    """The group-lasso proximal step after optimizer step `global_step` (0-based), in a coefficient phase."""
    config = setup.config
    if parallel.in_coefficient_phase(config.alternate, global_step):
        threshold = parallel.group_lasso_threshold(
            config.group_lasso, global_step + 1, setup.hardening_step, step_lr / config.lr
        )
        parallel.group_lasso_prox(setup.model, threshold)


def train_one_epoch(setup: TrainingSetup, progress: TrainingProgress, train_loader: Batches, epoch: int) -> EpochTotals:
    """One pass over train_loader (epoch `epoch`, 0-based), as torchvision's train_one_epoch.

    Advances `progress` (global step, number of classes, learned-assignment hardening) and leaves every rank
    with rank 0's buffers, so that evaluation and the checkpoint see one model.
    """
    config, device = setup.config, setup.device
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(epoch)
    setup.train_model.train()
    started = time.perf_counter()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, samples (this rank)
    bar = tqdm(
        train_loader, total=setup.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not setup.show_bar
    )
    for step, (images, labels) in enumerate(bar, 1):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits, loss, step_lr = _train_step(setup, progress.global_step, images, labels)
        if progress.pending:
            _shrink_groups(setup, progress.global_step, step_lr)
        progress.global_step += 1
        if progress.pending and progress.global_step >= setup.hardening_step:
            progress.pending = not _harden(setup.model, setup.optimizer, progress.global_step, setup.log)
        progress.num_classes = logits.shape[1]
        totals[0] += loss.detach().double() * len(labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
        if setup.on_step is not None:
            setup.on_step(progress.global_step)
        if setup.show_bar and step % config.log_interval == 0:
            loss_sum, correct, seen = totals.tolist()
            lr = setup.scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", lr=f"{lr:.3g}")
    bar.close()
    if setup.world_size > 1:
        dist.all_reduce(totals)
        _broadcast_buffers(setup.model)
    loss_sum, correct, seen = totals.tolist()
    return EpochTotals(loss_sum, correct, seen, time.perf_counter() - started)


def _epoch_record(epoch: int, totals: EpochTotals, test: dict, scheduler: LambdaLR) -> dict:
    """The history entry of epoch `epoch` (0-based): train sums, test scores, LR after it, throughput."""
    return dict(
        epoch=epoch + 1,
        lr=scheduler.get_last_lr()[0],
        train_loss=totals.loss_sum / totals.seen,
        train_accuracy=totals.correct / totals.seen,
        test_loss=test["loss"],
        test_accuracy=test["accuracy"],
        train_samples=int(totals.seen),
        train_seconds=totals.train_seconds,
        images_per_second=totals.seen / totals.train_seconds,
    )


def _epoch_summary(record: dict, epochs: int) -> str:
    """The one log line of an epoch."""
    return (
        f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f} | "
        f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f} | lr {record['lr']:.3g} | "
        f"{record['train_seconds']:.1f}s, {record['images_per_second']:.0f} img/s"
    )


def _final_metrics(test: dict, progress: TrainingProgress, config: TrainConfig, world_size: int) -> dict:
    """fit()'s return value and metrics.json: the final test scores, the last epoch's train scores, the history."""
    history = progress.history
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["train_samples"] for h in history)
    return dict(
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        test_samples=test["count"],
        test_per_class=test["per_class"],
        train_loss=history[-1]["train_loss"],
        train_accuracy=history[-1]["train_accuracy"],
        epochs=config.epochs,
        global_steps=progress.global_step,
        world_size=world_size,
        train_seconds=train_seconds,
        images_per_second=images / train_seconds if train_seconds > 0 else float("nan"),
        history=history,
        config=dataclasses.asdict(config),
    )


def _rank0_logger(rank: int) -> Callable[[str], None]:
    """A print that only rank 0 does: one log, not one per process."""

    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    return log


def _resume_or_start(
    checkpoint_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    config: TrainConfig,
    steps_per_epoch: int,
    hardening_step: int,
    device: torch.device,
    log: Callable[[str], None],
) -> TrainingProgress:
    """The progress to start from: the checkpoint's if there is one (restored into the model etc.), else none.

    Also notes whether a learned group assignment is still to harden, hardening it now if its step is past.
    """
    rank, world_size = _rank_and_world_size()
    progress = TrainingProgress()
    if checkpoint_path.exists():
        run_settings = dict(dataclasses.asdict(config), world_size=world_size, steps_per_epoch=steps_per_epoch)
        progress = resume_from_checkpoint(checkpoint_path, model, optimizer, scheduler, run_settings, device, rank)
        log(f"resuming from {checkpoint_path} after epoch {progress.epoch}/{config.epochs}")
    progress.pending = parallel.assignment_pending(model)  # learned group assignment, not hardened yet
    if progress.pending and progress.global_step >= hardening_step:  # cannot happen after a step of this loop
        progress.pending = not _harden(model, optimizer, progress.global_step, log)
    return progress


def _training_setup(
    model: nn.Module,
    teacher: nn.Module | None,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    steps_per_epoch: int,
    hardening_step: int,
    device: torch.device,
    log: Callable[[str], None],
    on_step: Callable[[int], None] | None,
) -> TrainingSetup:
    """Wrap the model for training and ready the teacher; done after resuming, so DDP starts from final weights."""
    rank, world_size = _rank_and_world_size()
    train_model = _wrap_for_training(model, config, device, world_size)
    kd_teacher = teacher if config.kd_alpha > 0 else None
    teacher_was_training = _prepare_teacher(kd_teacher, device, config.channels_last)
    return TrainingSetup(
        config=config,
        model=model,
        train_model=train_model,
        teacher=kd_teacher,
        teacher_was_training=teacher_was_training,
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        use_amp=autocast_enabled(config.amp, device),
        steps_per_epoch=steps_per_epoch,
        hardening_step=hardening_step,
        rank=rank,
        world_size=world_size,
        show_bar=_show_progress_bar(rank),
        log=log,
        on_step=on_step,
    )


def _final_test(setup: TrainingSetup, progress: TrainingProgress, last_test: dict | None, test_loader: Batches) -> dict:
    """After the last epoch: give the teacher its mode back, never leave an unassigned model, score the model.

    The last epoch's evaluation is reused unless the model changed since (a hardening) or no epoch ran here.
    """
    if setup.teacher is not None:
        setup.teacher.train(setup.teacher_was_training)
    if parallel.assignment_pending(setup.model):  # a checkpoint of an older run
        _harden(setup.model, setup.optimizer, progress.global_step, setup.log)
        last_test = None
    if last_test is None:  # e.g. resumed a finished run: score the checkpoint's model once more
        last_test = evaluate(setup.model, test_loader, progress.num_classes, setup.device, setup.config.channels_last)
    return last_test


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
    evaluate_each_epoch: bool = True,
) -> dict:
    """Train `model` in place (left on `device`, unwrapped), resuming from out_dir/checkpoint.pt if there is one.

    Writes out_dir/checkpoint.pt after every epoch and out_dir/metrics.json at the end (rank 0 only); returns the
    metrics on every rank. `teacher` (frozen, only run in eval mode; a `TeacherCache` to share its logits) is used
    when config.kd_alpha > 0. `on_step(global_step)` is called after every optimizer step.
    `evaluate_each_epoch=False` scores the test set only after the last epoch (the history's earlier test scores
    are NaN): a grid that reads only the final accuracy saves an evaluation per epoch, with the same weights.
    """
    if config.kd_alpha > 0 and teacher is None:
        raise ValueError(f"TrainConfig.kd_alpha={config.kd_alpha} needs a teacher model; pass teacher= or kd_alpha=0")
    rank, world_size = _rank_and_world_size()
    device = _training_device(device)
    # channels_last on every device: oneDNN's NHWC convolutions made the default model's CPU training step
    # about 1.7x faster (docs/benchmarks.md), and cuDNN's are the fast ones on GPUs
    channels_last = config.channels_last
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError("the train loader yields no batch")
    log = _rank0_logger(rank)

    if config.alternate is not None:
        parallel.basis_parameter(model)  # refuses a model without a basis, before any work
    seed_everything(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    hardening_step = parallel.harden_step(config.harden_at, config.epochs * steps_per_epoch)
    progress = _resume_or_start(
        checkpoint_path, model, optimizer, scheduler, config, steps_per_epoch, hardening_step, device, log
    )
    setup = _training_setup(
        model, teacher, config, optimizer, scheduler, steps_per_epoch, hardening_step, device, log, on_step
    )

    last_test: dict | None = None
    for epoch in range(progress.epoch, config.epochs):
        totals = train_one_epoch(setup, progress, train_loader, epoch)
        last_test = (
            evaluate(model, test_loader, progress.num_classes, device, channels_last)
            if evaluate_each_epoch or epoch == config.epochs - 1
            else dict(loss=math.nan, accuracy=math.nan)
        )
        progress.history.append(_epoch_record(epoch, totals, last_test, scheduler))
        progress.epoch = epoch + 1
        save_checkpoint(checkpoint_path, setup, progress)
        log(_epoch_summary(progress.history[-1], config.epochs))

    metrics = _final_metrics(_final_test(setup, progress, last_test, test_loader), progress, config, world_size)
    metrics["autocast"] = "bf16" if setup.use_amp else "fp32"  # what amp="auto" chose on this machine
    if rank == 0:
        atomic_write_json(out_dir / METRICS_NAME, _json_ready(metrics), sort_keys=False, allow_nan=False)
    return metrics
