"""basisn.train: determinism, exact resume after a kill, refusing another run's checkpoint, KD, DDP, config checks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _train_script as script
import pytest
import torch
import torch.nn.functional as F

from basisn import train as train_module
from basisn.train import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    CheckpointMismatchError,
    TeacherCache,
    TrainConfig,
    autocast_enabled,
    distillation_loss,
    evaluate,
    fit,
    lr_factor,
)

SCRIPT = Path(__file__).with_name("_train_script.py")
TIMING_KEYS = {"train_seconds", "images_per_second"}


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """fit() seeds the RNGs and turns on deterministic algorithms: keep that from leaking into other tests."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead, and spin badly on shared cores
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)


def without_timing(metrics: dict) -> dict:
    """The part of fit()'s metrics that must be reproducible (wall-clock times are not)."""
    kept = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    kept["history"] = [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in metrics["history"]]
    return kept


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def train_in_process(out_dir: Path, **config) -> tuple[dict, dict]:
    train, test = script.make_loaders()
    model = script.make_model()
    metrics = fit(model, train, test, script.make_config(**config), out_dir)
    return metrics, {k: v.clone() for k, v in model.state_dict().items()}


def run_script(out_dir: Path, result_dir: Path, *args: str, nproc: int | None = None) -> subprocess.CompletedProcess:
    command = [str(SCRIPT), "--out-dir", str(out_dir), "--result-dir", str(result_dir), *args]
    if nproc is None:
        command = [sys.executable, *command]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        command = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", *command]
    env = dict(os.environ, CI="true", OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)


def script_results(result_dir: Path, rank: int = 0) -> tuple[dict, dict]:
    metrics = json.loads((result_dir / f"metrics_rank{rank}.json").read_text())
    state = torch.load(result_dir / f"state_rank{rank}.pt", weights_only=True)
    return metrics, state


# --------------------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    first, first_state = train_in_process(tmp_path / "a")
    second, second_state = train_in_process(tmp_path / "b")
    assert without_timing(first) == without_timing(second)
    assert_same_state(first_state, second_state)
    assert len(first["history"]) == 3 and first["global_steps"] == 18
    assert first["test_samples"] == 37 and len(first["test_per_class"]) == script.NUM_CLASSES
    assert first["train_accuracy"] > 0.5  # it does learn the synthetic rule
    on_disk = json.loads((tmp_path / "a" / METRICS_NAME).read_text())
    assert on_disk["test_accuracy"] == first["test_accuracy"]
    checkpoint = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["config"] == on_disk["config"]
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "rng", "history", "config"}


def test_other_seed_gives_other_weights(tmp_path):
    _, state = train_in_process(tmp_path / "a")
    _, other = train_in_process(tmp_path / "b", seed=1)  # same initial weights: only dropout masks differ
    assert not torch.equal(state["head.weight"], other["head.weight"])


def test_kill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    reference = run_script(tmp_path / "ref", tmp_path / "ref_result")
    assert reference.returncode == 0, reference.stderr

    run_dir, result_dir = tmp_path / "run", tmp_path / "run_result"
    killed = run_script(run_dir, result_dir, "--kill-at-step", "9")  # 6 steps per epoch: mid epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 6
    assert not (run_dir / METRICS_NAME).exists() and not result_dir.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT_NAME]  # no temp file left behind

    resumed = run_script(run_dir, result_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "after epoch 1/3" in resumed.stdout
    expected_metrics, expected_state = script_results(tmp_path / "ref_result")
    metrics, state = script_results(result_dir)
    assert without_timing(metrics) == without_timing(expected_metrics)
    assert_same_state(state, expected_state)


def test_resume_refuses_another_config_and_leaves_the_checkpoint_alone(tmp_path):
    train_in_process(tmp_path, epochs=1, warmup_epochs=0)
    checkpoint = tmp_path / CHECKPOINT_NAME
    before = (checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns)
    with pytest.raises(CheckpointMismatchError) as error:
        train_in_process(tmp_path, epochs=1, warmup_epochs=0, lr=0.01, nesterov=False)
    message = str(error.value)
    assert "lr (checkpoint 0.05, now 0.01)" in message and "nesterov" in message
    assert "epochs" not in message  # only the fields that differ
    assert "Delete" in message and str(tmp_path) in message and "out_dir" in message
    assert (checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns) == before


def test_resume_refuses_other_data(tmp_path):
    train_in_process(tmp_path, epochs=1, warmup_epochs=0)
    train, test = script.make_loaders()
    train.batch_size = 32
    with pytest.raises(CheckpointMismatchError, match=r"steps_per_epoch \(checkpoint 6, now 3\)"):
        fit(script.make_model(), train, test, script.make_config(epochs=1, warmup_epochs=0), tmp_path)


def test_rerun_of_a_finished_run_trains_nothing_and_reports_the_same(tmp_path):
    first, state = train_in_process(tmp_path, epochs=1, warmup_epochs=0)
    train, test = script.make_loaders()
    model, steps = script.make_model(), []
    again = fit(model, train, test, script.make_config(epochs=1, warmup_epochs=0), tmp_path, on_step=steps.append)
    assert steps == [] and without_timing(again) == without_timing(first)
    assert_same_state(model.state_dict(), state)


def test_distillation_moves_the_student_toward_the_teacher(tmp_path):
    train, test = script.make_loaders()
    teacher = script.make_model(seed=1).train()
    with torch.no_grad():
        teacher.head.weight.mul_(5)  # confident predictions, far from a fresh student's near-uniform ones
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}

    def divergence(student) -> float:
        with torch.no_grad():
            student.eval(), teacher.eval()
            images = torch.cat([x for x, _ in test])
            return distillation_loss(student(images), teacher(images), 1.0).item()

    config = dict(kd_alpha=1.0, kd_temperature=1.0, label_smoothing=0.0, lr=0.1)
    before = divergence(script.make_model(seed=2))
    distilled = script.make_model(seed=2)
    fit(distilled, train, test, script.make_config(**config), tmp_path / "kd", teacher=teacher)
    teacher.train()  # fit must hand the teacher back in the mode it was given
    plain = script.make_model(seed=2)
    fit(plain, train, test, script.make_config(**config | {"kd_alpha": 0.0}), tmp_path / "ce", teacher=teacher)
    assert teacher.training
    assert_same_state(teacher.state_dict(), teacher_state)  # frozen: its BatchNorm statistics too
    assert divergence(distilled) < 0.5 * before
    assert divergence(distilled) < 0.5 * divergence(plain)


def test_distillation_without_teacher_is_refused(tmp_path):
    train, test = script.make_loaders()
    with pytest.raises(ValueError, match="kd_alpha=0.5 needs a teacher"):
        fit(script.make_model(), train, test, script.make_config(kd_alpha=0.5), tmp_path)


def test_distillation_loss_is_scaled_kl_divergence():
    student, teacher, temperature = torch.randn(5, 4), torch.randn(5, 4), 3.0
    p = F.softmax(teacher / temperature, dim=1)
    q = F.softmax(student / temperature, dim=1)
    expected = temperature**2 * (p * (p.log() - q.log())).sum(1).mean()
    assert torch.allclose(distillation_loss(student, teacher, temperature), expected, atol=1e-6)
    assert distillation_loss(teacher, teacher, temperature).abs().item() < 1e-6


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One uninterrupted 2-process torchrun run of the BasisN tiny model: (out_dir, result_dir, process)."""
    root = tmp_path_factory.mktemp("ddp")
    out_dir, result_dir = root / "run", root / "result"
    started = time.perf_counter()
    done = run_script(out_dir, result_dir, "--basisn", nproc=2)
    print(f"2-process DDP run: {time.perf_counter() - started:.1f}s")
    assert done.returncode == 0, done.stdout + done.stderr
    return out_dir, result_dir, done


def test_ddp_two_processes_with_a_basisn_model(ddp_run):
    out_dir, result_dir, done = ddp_run

    assert sorted(p.name for p in out_dir.iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]
    assert done.stdout.count("epoch 3/3:") == 1  # one rank logs
    checkpoint = torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2 and checkpoint["steps_per_epoch"] == 6

    metrics0, state0 = script_results(result_dir, 0)
    metrics1, state1 = script_results(result_dir, 1)
    assert_same_state(state0, state1)  # parameters and BatchNorm statistics
    assert "basisn_bank.weight" in state0
    assert without_timing(metrics0) == without_timing(metrics1)
    assert metrics0["test_samples"] == 37  # 19 + 18: every test sample once
    assert json.loads((out_dir / METRICS_NAME).read_text())["test_accuracy"] == metrics0["test_accuracy"]

    model = script.make_model(basisn=True)  # the same weights scored in one process agree with the DDP count
    model.load_state_dict(state0)
    single = evaluate(model, script.make_loaders()[1], script.NUM_CLASSES)
    assert single["count"] == 37
    assert single["accuracy"] == metrics0["test_accuracy"]
    assert math.isclose(single["loss"], metrics0["test_loss"], rel_tol=1e-5)


def test_evaluate_counts_per_class_and_restores_mode():
    model = script.make_model().train()
    _, test = script.make_loaders()
    result = evaluate(model, test, script.NUM_CLASSES + 1)  # one class never occurs
    assert model.training
    assert result["count"] == 37 and len(result["per_class"]) == script.NUM_CLASSES + 1
    assert math.isnan(result["per_class"][-1])
    labels = torch.cat([y for _, y in test])
    weighted = sum(acc * int((labels == c).sum()) for c, acc in enumerate(result["per_class"][:-1]))
    assert math.isclose(weighted / 37, result["accuracy"])


def test_lr_schedule_warms_up_linearly_then_decays_to_zero():
    factors = [lr_factor(step, 4, 20) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert lr_factor(20, 4, 20) == 0.0 and lr_factor(0, 0, 10) == 1.0
    assert lr_factor(5, 10, 10) == 0.6  # warm-up over the whole run


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("label_smoothing", 1.5),
        ("warmup_epochs", 4),
        ("kd_alpha", 1.2),
        ("kd_temperature", 0),
        ("amp", "yes"),
        ("amp", True),  # the old boolean: the modes are auto | on | off
        ("seed", -1),
        ("log_interval", 0),
        ("grad_clip", 0.0),
    ],
)
def test_invalid_config_names_field_value_and_range(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}=.*not allowed; allowed: ") as error:
        TrainConfig(**{"epochs": 3, "lr": 0.1, field: value})
    assert repr(value) in str(error.value)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov=True.*momentum is 0"):
        TrainConfig(epochs=1, lr=0.1, momentum=0.0, nesterov=True)
    TrainConfig(epochs=1, lr=0.1, momentum=0.0, nesterov=False)


@pytest.mark.slow
def test_ddp_kill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, ddp_run):
    _, expected_dir, _ = ddp_run
    run_dir, result_dir = tmp_path / "run", tmp_path / "result"
    killed = run_script(run_dir, result_dir, "--basisn", "--kill-at-step", "9", nproc=2)
    assert killed.returncode != 0 and not result_dir.exists()
    assert torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1

    resumed = run_script(run_dir, result_dir, "--basisn", nproc=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resuming from") == 1
    for rank in (0, 1):
        metrics, state = script_results(result_dir, rank)
        expected_metrics, expected_state = script_results(expected_dir, rank)
        assert without_timing(metrics) == without_timing(expected_metrics)
        assert_same_state(state, expected_state)


@pytest.mark.parametrize("amp", ["off", "on"])
def test_cached_teacher_logits_give_the_same_fine_tunes_as_recomputing_them(tmp_path, amp):
    """Two fine-tunes over the same batches: the second replays the first's teacher logits, bit for bit."""
    train, test = script.make_loaders()
    teacher = script.make_model(seed=1)
    config = script.make_config(kd_alpha=0.7, amp=amp)
    plain = [script.make_model(seed=s, basisn=True) for s in (2, 3)]
    cached = [script.make_model(seed=s, basisn=True) for s in (2, 3)]
    cache = TeacherCache(teacher)
    for k, (a, b) in enumerate(zip(plain, cached)):
        expected = fit(a, train, test, config, tmp_path / f"plain{k}", teacher=teacher)
        got = fit(b, train, test, config, tmp_path / f"cached{k}", teacher=cache)
        assert_same_state(a.state_dict(), b.state_dict())
        assert without_timing(got) == without_timing(expected)
    steps = config.epochs * len(train)
    assert (cache.misses, cache.hits) == (steps, steps)  # computed in the first fine-tune, replayed in the second
    other = script.make_loaders(seed=5)[0]  # other batches are never given the stored logits
    fit(script.make_model(seed=2, basisn=True), other, test, config, tmp_path / "other", teacher=cache)
    assert cache.misses == 2 * steps


def test_amp_auto_follows_the_cpu_and_on_off_are_forced(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_enabled("on", cpu) and not autocast_enabled("off", cpu)
    assert autocast_enabled("auto", torch.device("cuda"))
    for native in (True, False):
        monkeypatch.setattr(train_module, "native_bf16_cpu", lambda native=native: native)
        assert autocast_enabled("auto", cpu) is native


def test_fit_records_which_precision_it_trained_in(tmp_path):
    train, test = script.make_loaders()
    on = fit(script.make_model(), train, test, script.make_config(amp="on"), tmp_path / "on")
    off = fit(script.make_model(), train, test, script.make_config(amp="off"), tmp_path / "off")
    assert (on["autocast"], off["autocast"]) == ("bf16", "fp32")
    assert on["test_loss"] != off["test_loss"]  # bf16 autocast really ran


def test_evaluating_only_after_the_last_epoch_trains_the_same_weights(tmp_path):
    train, test = script.make_loaders()
    every, last = script.make_model(), script.make_model()
    a = fit(every, train, test, script.make_config(), tmp_path / "every")
    b = fit(last, train, test, script.make_config(), tmp_path / "last", evaluate_each_epoch=False)
    assert_same_state(every.state_dict(), last.state_dict())
    assert b["test_accuracy"] == a["test_accuracy"] and b["test_loss"] == a["test_loss"]
    assert [math.isnan(h["test_loss"]) for h in b["history"]] == [True, True, False]
