"""Nothing lost, and every bad input one line before work (issue 15, parts 1-5).

Fast tests call the stages in-process with the data loaders, training and the decomposition replaced by traps,
so that each bad input must be refused before any data is loaded or any training step runs. The `slow` ones
run real `dvc repro` on a smoke-profile copy of the repository (tests/test_pipeline.py's `repository_copy`).
"""

from __future__ import annotations

import copy
import fcntl
import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from basisn import params
from basisn.atomic import OutputError, atomic_directory, lock_path, output_lock
from basisn.checkpoints import DENSE_FORMAT, save_model
from basisn.cli import main as cli
from basisn.models import build_model
from basisn.notebooks import clean_stale_staging

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
DATA = ROOT / "data" / "raw"
needs_data = pytest.mark.skipif(not (DATA / "fashion-mnist").is_dir(), reason="needs Fashion-MNIST: `make data`")
META = dict(model="small_resnet", num_classes=10, in_channels=1, input_size=[28, 28], dataset="fashion_mnist")


class WorkStarted(AssertionError):
    """Raised by the traps: a stage got past its checks."""


@pytest.fixture
def traps(monkeypatch):
    """Data loading, training, decomposition, simulation and the cost model all fail the test if reached."""

    def trap(*_args, **_kwargs):
        raise WorkStarted("work started before the bad input was refused")

    monkeypatch.delenv("BASISN_PROFILE", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    for target in (
        "basisn.data.build_loaders",
        "basisn.train.fit",
        "basisn.stages.decompose.to_basisn",
        "basisn.stages.sweep.to_basisn",
        "basisn.stages.tradeoff.to_basisn",
        "basisn.stages.hardware.run",
        "basisn.stages.robustness.run",
    ):
        monkeypatch.setattr(target, trap)


def params_file(tmp_path: Path, edit=None, data_root: Path = DATA) -> Path:
    raw = copy.deepcopy(RAW)
    raw["data"]["root"] = str(data_root)
    if edit:
        edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(("basisn: ", "hw-eval: ")), err
    return err


def dense_file(tmp_path: Path, name: str = "dense.pt", meta: dict | None = None, model=None) -> Path:
    torch.manual_seed(0)
    model = model or build_model("small_resnet", 10, 1)
    path = tmp_path / name
    save_model(model, path, meta or META)
    return path


# --------------------------------------------------------------------------------------------------------------
# Part 4: bad params, one line before work.
# --------------------------------------------------------------------------------------------------------------
BAD_PARAMS = [
    ("train", lambda r: r["train"].update(warmup_epochs=9), "train.warmup_epochs=9 exceeds train.epochs=8"),
    ("train", lambda r: r["train"].update(lr=float("inf")), "train.lr=inf is not allowed; allowed: a finite"),
    ("train", lambda r: r.update(seed=2**70), f"seed={2**70} is not allowed"),
    ("train", lambda r: r["data"].update(subset=70000), "data.subset=70000 is not allowed for fashion_mnist"),
    ("train", lambda r: r["data"].update(subset=3), "data.subset=3 is not allowed for fashion_mnist; allowed: 10"),
    ("decompose", lambda r: r["decompose"].update(exclude=["nosuchlayer"]), "'nosuchlayer', which is no module"),
    ("decompose", lambda r: r["decompose"].update(segment_len=100000), "decompose.segment_len=100000"),
    ("train", lambda r: r["hardware"].update(crossbars=[10**18]), f"hardware.crossbars contains {10**18}"),
    ("sweep", lambda r: r["finetune"].update(warmup_epochs=2), "sweep.finetune_epochs=1 (the sweep's fine-tune)"),
    ("tradeoff", lambda r: r["tradeoff"].update(best="nope"), "tradeoff.best='nope' is not one of tradeoff.options"),
    (
        "tradeoff",
        lambda r: r["tradeoff"]["options"].update(x={"decompose": {"assignment": "magic"}}),
        "tradeoff.options.x.decompose.assignment='magic' is not allowed",
    ),
    (
        "train",
        lambda r: r["profiles"]["smoke"].update(hardware={"preset": "turbo"}),
        "profiles.smoke: hardware.preset='turbo' is unknown",
    ),
]


@needs_data
@pytest.mark.parametrize(("stage", "edit", "message"), BAD_PARAMS, ids=[m for _, _, m in BAD_PARAMS])
def test_bad_params_are_one_line_before_any_work(tmp_path, traps, capsys, stage, edit, message):
    dense = dense_file(tmp_path)
    extra = ["--dense", str(dense)] if stage in ("decompose", "sweep", "tradeoff") else []
    code = cli([stage, "--params", str(params_file(tmp_path, edit)), "--out", str(tmp_path / "out"), *extra])
    assert code == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_missing_dataset_root_is_one_line_before_any_work(tmp_path, traps, capsys):
    code = cli(["train", "--params", str(params_file(tmp_path, data_root=tmp_path / "nowhere")), "--out", "x"])
    assert code == 2
    err = one_line(capsys)
    assert f"{tmp_path / 'nowhere'}/fashion-mnist/" in err and "missing; run `basisn data fetch`" in err


@needs_data
def test_unwritable_out_is_found_before_training(tmp_path, traps, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = cli(["train", "--params", str(params_file(tmp_path)), "--out", str(blocker / "train")])
    assert code == 2
    assert f"--out {blocker / 'train'}: cannot create {blocker}" in one_line(capsys)


@needs_data
def test_robustness_unwritable_out_is_found_before_simulating(tmp_path, traps, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    dense = dense_file(tmp_path)
    command = ["robustness", "--params", str(params_file(tmp_path)), "--dense", str(dense), "--basisn", str(dense)]
    assert cli([*command, "--out", str(blocker / "robustness")]) == 2
    assert f"--out {blocker / 'robustness'}: cannot create {blocker}" in one_line(capsys)


def test_hw_eval_reads_the_profile_override_and_validates_it(tmp_path, traps, capsys):
    raw = copy.deepcopy(RAW)
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"]["hardware"] = {"batch": 4, "overrides": {"verify_iters": 3}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    block = params.profile_block(path, "hardware")
    assert block["batch"] == 4 and block["overrides"] == {"verify_iters": 3}
    assert block["networks"] == RAW["hardware"]["networks"]  # the rest of the top-level block stays
    raw["profiles"]["smoke"]["hardware"] = {"preset": "turbo"}
    path.write_text(yaml.safe_dump(raw))
    assert cli(["hw-eval", "--params", str(path), "--out", str(tmp_path / "hw")]) == 2
    assert "hardware.preset='turbo' is unknown" in one_line(capsys)


@needs_data
def test_hw_eval_unwritable_out_and_huge_crossbars(tmp_path, traps, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli(["hw-eval", "--params", str(params_file(tmp_path)), "--out", str(blocker / "hw")]) == 2
    assert "cannot create" in one_line(capsys)
    edit = lambda r: r["hardware"].update(crossbars=[10**18])  # noqa: E731
    assert cli(["hw-eval", "--params", str(params_file(tmp_path, edit)), "--out", str(tmp_path / "hw")]) == 2
    assert f"hardware.crossbars contains {10**18}; allowed: integers in [1, 1048576]" in one_line(capsys)


def test_stray_profile_variable_inside_dvc_repro_is_refused(tmp_path, monkeypatch):
    path = params_file(tmp_path)
    monkeypatch.setenv("BASISN_PROFILE", "smoke")
    assert params.load(path)["profile"] == "smoke"  # outside dvc repro: a one-off run of a stage
    monkeypatch.setenv("DVC_STAGE", "data")
    with pytest.raises(params.ParamsError, match="BASISN_PROFILE=smoke is set inside `dvc repro`"):
        params.load(path)
    monkeypatch.setenv("BASISN_PROFILE", "default")  # the same profile as params.yaml: no disagreement
    assert params.load(path)["profile"] == "default"


# --------------------------------------------------------------------------------------------------------------
# Part 4: data and model files.
# --------------------------------------------------------------------------------------------------------------
@needs_data
def test_corrupt_data_via_data_check_is_one_line(tmp_path, traps, capsys):
    root = tmp_path / "raw"
    shutil.copytree(DATA, root)
    labels = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(labels.read_bytes())
    blob[100] ^= 0xFF
    labels.write_bytes(bytes(blob))
    code = cli(["data-check", "--params", str(params_file(tmp_path, data_root=root)), "--out", str(tmp_path / "d")])
    assert code == 2
    err = one_line(capsys)
    assert str(labels) in err and "is not the expected" in err and "basisn data fetch" in err


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    return path


def _code_running_pickle(tmp_path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (print, ("this pickle runs code",))

    path = tmp_path / "tampered.pt"
    path.write_bytes(pickle.dumps(Payload()))
    return path


class _RunsCode:
    def __reduce__(self):
        return (print, ("this checkpoint runs code",))


def _code_in_torch_zip(tmp_path: Path) -> Path:
    path = tmp_path / "tampered_zip.pt"
    torch.save({"format": DENSE_FORMAT, "meta": META, "state_dict": {}, "payload": _RunsCode()}, path)
    return path


def _truncated(tmp_path: Path) -> Path:
    path = dense_file(tmp_path, "truncated.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _other_architecture(tmp_path: Path) -> Path:
    return dense_file(tmp_path, "other.pt", model=build_model("cifar_resnet18", 10, 1))


def _meta_num_classes(value):
    return lambda tmp_path: dense_file(tmp_path, "meta.pt", meta=dict(META, num_classes=value))


def _nan_weights(tmp_path: Path) -> Path:
    model = build_model("small_resnet", 10, 1)
    with torch.no_grad():
        next(model.parameters()).view(-1)[3] = float("nan")
    return dense_file(tmp_path, "nan.pt", model=model)


def _not_a_model(tmp_path: Path) -> Path:
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    return path


MODEL_FILES = [
    (_garbage, "not a basisn model file (unreadable as a weights-only torch file"),
    (_code_running_pickle, "not a basisn model file (unreadable as a weights-only torch file"),
    (_code_in_torch_zip, "not a basisn model file (unreadable as a weights-only torch file: UnpicklingError"),
    (_truncated, "not a basisn model file (unreadable as a weights-only torch file"),
    (_not_a_model, "not a basisn model file (format None"),
    (_other_architecture, "the file and its meta disagree"),
    (_meta_num_classes(100_000_000.0), "meta num_classes=100000000.0 is not allowed"),
    (_meta_num_classes(10**8), "meta num_classes=100000000 is not allowed"),
    (_meta_num_classes(100), "fc.weight has shape (10, 64) but the architecture small_resnet (num_classes=100"),
    (_nan_weights, "holds 1 NaN/Inf values"),
]


@needs_data
@pytest.mark.parametrize(("make", "message"), MODEL_FILES, ids=[message[:40] for _, message in MODEL_FILES])
def test_bad_model_files_name_the_file_in_one_line(tmp_path, traps, capsys, make, message):
    path = make(tmp_path)
    code = cli(["decompose", "--params", str(params_file(tmp_path)), "--dense", str(path), "--out", str(tmp_path)])
    assert code == 2
    err = one_line(capsys)
    assert err.startswith(f"basisn: {path}: ") and message in err
    assert "weights_only" not in err.replace("weights-only", "")  # never the advice to load it unsafely


@needs_data
def test_a_dense_file_where_a_basisn_one_is_needed(tmp_path, traps, capsys):
    dense = dense_file(tmp_path)
    code = cli(
        ["finetune", "--params", str(params_file(tmp_path)), "--decomposed", str(dense), "--teacher", str(dense)]
    )
    assert code == 2
    assert f"basisn: {dense}: is not a BasisN (basis-mapped) model file" in one_line(capsys)


# --------------------------------------------------------------------------------------------------------------
# Part 5: one writer per output, atomic under concurrency, leftovers of killed runs cleaned.
# --------------------------------------------------------------------------------------------------------------
HOLD = """
import sys, time
from basisn.atomic import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@needs_data
@pytest.mark.parametrize("stage", ["train", "hw-eval"])
def test_a_second_writer_of_the_same_out_stops_at_once_naming_the_first(tmp_path, traps, capsys, stage):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli([stage, "--params", str(params_file(tmp_path)), "--out", str(out)])
        assert code == 2
        assert f"--out {out} is being written by pid {holder.pid} on " in one_line(capsys)
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # the kernel dropped the dead holder's lock: nothing to clean by hand
        pass


STRESS = """
import sys
from pathlib import Path
from basisn.atomic import atomic_directory
final, me, writes = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(writes):
    with atomic_directory(final) as out:
        (out / "a.txt").write_text(f"{me} {i}")
        (out / "b.txt").write_text(f"{me} {i}")
"""


def test_atomic_directory_is_safe_under_concurrent_writers(tmp_path):
    final = tmp_path / "out"
    writers = [
        subprocess.Popen([sys.executable, "-c", STRESS, str(final), name, "300"], stderr=subprocess.PIPE, text=True)
        for name in ("first", "second")
    ]
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, retired or lock file leftovers
    assert (final / "a.txt").read_text() == (final / "b.txt").read_text()  # one writer's complete output


def test_a_writer_waiting_for_the_lock_is_not_confused_by_the_holders_swap(tmp_path, monkeypatch):
    """The check of `final` itself must wait for the lock: the holder's swap renames `final` away and its new
    version in, and a check between the two renames sees no directory (the race CI once hit in the test above).

    Deterministic: every access check of `final` is made to land inside another writer's swap whenever that
    writer could be swapping, i.e. whenever the lock is free for it (a second open file description of the
    lock file contends with ours, as another process's would)."""
    final = tmp_path / "out"
    with atomic_directory(final) as out:
        (out / "a.txt").write_text("previous")
    real_access = os.access
    swaps_seen = []

    def access_during_another_writers_swap(path, mode):
        if Path(path) != final:
            return real_access(path, mode)
        with open(lock_path(final), "a") as other_writer:
            try:
                fcntl.flock(other_writer, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # we hold the lock: no other writer can be mid-swap
                return real_access(path, mode)
            retired = final.with_name(f".{final.name}.old")
            final.rename(retired)  # the first rename of its swap ...
            try:
                swaps_seen.append(path)
                return real_access(path, mode)
            finally:
                retired.rename(final)  # ... and the second (its new version in; here the same one back)

    monkeypatch.setattr(os, "access", access_during_another_writers_swap)
    with atomic_directory(final) as out:
        (out / "a.txt").write_text("new")
    assert swaps_seen == []  # the only checks of `final` were made under the lock
    assert (final / "a.txt").read_text() == "new"
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != final and real_access(path, mode))
    with pytest.raises(OutputError, match="is not writable"), atomic_directory(final):  # still refused when it must
        pass


def test_leftovers_of_killed_writers_are_cleaned_or_restored(tmp_path):
    final = tmp_path / "sweep"
    (tmp_path / ".sweep.staging-dead").mkdir()  # killed mid-write
    (tmp_path / ".sweep.old").mkdir()  # killed between the swap's two renames: the previous output
    (tmp_path / ".sweep.old" / "results.csv").write_text("previous")
    with output_lock(final):
        pass
    assert (final / "results.csv").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    (tmp_path / ".sweep.staging-dead").mkdir()
    with atomic_directory(final) as out:
        (out / "results.csv").write_text("new")
    assert (final / "results.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]


def test_a_failed_write_leaves_the_previous_output(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as out:
        (out / "x").write_text("good")
    with pytest.raises(RuntimeError), atomic_directory(final) as out:
        (out / "x").write_text("half")
        raise RuntimeError("killed")
    assert (final / "x").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_notebook_staging_directories_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".staging-{dead.pid}-abc").mkdir()  # a killed run's
    (tmp_path / ".staging-k2j3h4").mkdir()  # the old naming, without a pid: from before this fix, stale
    (tmp_path / f".staging-{os.getpid()}-live").mkdir()  # a live run's (this process)
    removed = clean_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".staging-{dead.pid}-abc", ".staging-k2j3h4"])
    assert [p.name for p in tmp_path.iterdir()] == [f".staging-{os.getpid()}-live"]


# --------------------------------------------------------------------------------------------------------------
# Parts 1-3 under a real `dvc repro` (slow): a smoke-profile copy with data, train and decompose outputs.
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    from test_pipeline import BIN, repository_copy, run

    if not (DATA / "fashion-mnist").is_dir():
        pytest.skip("needs Fashion-MNIST in data/raw: run `make data`")
    repo = repository_copy(tmp_path_factory.mktemp("reliability"))
    run([str(BIN / "dvc"), "repro", "decompose"], repo)
    return repo


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every output file (not the hidden lock files next to the output directories)."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted((repo / "outputs").rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def dvc(repo: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    from test_pipeline import BIN, environment

    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env or environment(), capture_output=True, text=True, timeout=600
    )


def basisn_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("basisn:")]


@pytest.mark.slow
def test_dvc_repro_with_a_bad_param_leaves_the_previous_outputs(pipeline_repo):
    repo, before = pipeline_repo, snapshot(pipeline_repo)
    original = (repo / "params.yaml").read_text()
    raw = yaml.safe_load(original)
    raw["decompose"]["n_basis"] = 256
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        result = dvc(repo, "repro", "--single-item", "decompose")  # only this stage, as DVC runs it
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert basisn_lines(result) == ["basisn: params: decompose.n_basis=256 exceeds decompose.segment_len=128"]
    assert snapshot(repo) == before


@pytest.mark.slow
def test_sigkill_of_dvc_repro_mid_stage_leaves_the_previous_outputs(pipeline_repo):
    from test_pipeline import BIN, environment

    repo, before = pipeline_repo, snapshot(pipeline_repo)
    lock = repo / "outputs" / ".train.lock"
    process = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", "train"],
        cwd=repo,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (lock.is_file() and lock.read_text().strip()):  # `basisn train` holds its output: it is running
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # mid training
    os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage it runs
    process.wait()
    assert snapshot(repo) == before
    assert dvc(repo, "status", "train").stdout.strip().endswith("Data and pipelines are up to date.")


@pytest.mark.slow
def test_corrupt_raw_data_fails_dvc_repro_in_one_line_and_keeps_the_pin(pipeline_repo):
    repo, before = pipeline_repo, snapshot(pipeline_repo)
    pin = (repo / "data.dvc").read_bytes()
    labels = repo / "data" / "raw" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    blob = bytearray(good)
    blob[100] ^= 0xFF
    labels.write_bytes(bytes(blob))
    try:
        result = dvc(repo, "repro")
    finally:
        labels.write_bytes(good)
    assert result.returncode != 0
    lines = basisn_lines(result)
    assert len(lines) == 1, result.stdout + result.stderr
    assert "data/raw/fashion-mnist/t10k-labels-idx1-ubyte.gz: MD5" in lines[0] and "basisn data fetch" in lines[0]
    assert (repo / "data.dvc").read_bytes() == pin
    assert snapshot(repo) == before
    gzip.decompress(labels.read_bytes())  # restored for the other tests


@pytest.mark.slow
def test_stray_basisn_profile_cannot_make_outputs_disagree_with_dvc_lock(pipeline_repo):
    from test_pipeline import environment

    repo, before = pipeline_repo, snapshot(pipeline_repo)
    lock = (repo / "dvc.lock").read_text()
    assert yaml.safe_load(lock)["stages"]["data"]["params"]["params.yaml"]["profile"] == "smoke"
    result = dvc(repo, "repro", "--force", "--single-item", "data", env=dict(environment(), BASISN_PROFILE="default"))
    assert result.returncode != 0
    assert basisn_lines(result) == [
        "basisn: params: BASISN_PROFILE=default is set inside `dvc repro` (stage data), where the profile is "
        "params.yaml's `profile: smoke` (recorded in dvc.lock); unset BASISN_PROFILE or run "
        "`dvc exp run -S profile=default`"
    ]
    assert (repo / "dvc.lock").read_text() == lock
    assert snapshot(repo) == before
    summary = json.loads((repo / "outputs" / "data" / "summary.json").read_text())
    assert summary["profile"] == "smoke" and summary["train_samples"] == 1024
