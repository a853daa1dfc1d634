"""params.yaml validation: one line naming the problem, before any work, nothing earlier overwritten."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from basisn import params
from basisn.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_profile_of_the_repository_params_resolves():
    for name in RAW["profiles"]:
        resolved = params.resolve(RAW, name)
        assert resolved["profile"] == name and "profiles" not in resolved
    assert params.resolve(RAW)["data"]["dataset"] == "fashion_mnist"


def test_profile_overrides_only_what_it_names():
    resolved = params.resolve(RAW, "cifar100_resnet18")
    assert resolved["model"]["name"] == "cifar_resnet18" and resolved["data"]["dataset"] == "cifar100"
    assert resolved["decompose"] == RAW["decompose"]  # untouched blocks keep the defaults


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["train"].update(epoch=3), "unknown key train.'epoch'"),
        (lambda r: r.update(extra=1), "unknown key 'extra'"),
        (lambda r: r["train"].update(lr=-0.1), "train.lr=-0.1"),
        (lambda r: r["train"].update(epochs=0), "train.epochs=0"),
        (lambda r: r["data"].update(dataset="mnist"), "data.dataset='mnist'"),
        (lambda r: r["decompose"].update(coef_bits=1), "decompose.coef_bits=1"),
        (lambda r: r["decompose"].update(n_basis=200), "decompose.n_basis=200 exceeds"),
        (lambda r: r["decompose"].update(groups=3), "decompose.groups=3 does not divide"),
        (lambda r: r.update(profile="cifar10"), "unknown profile 'cifar10'"),
        (lambda r: r["profiles"]["smoke"]["train"].update(lrate=1), "unknown key profiles.smoke.train.'lrate'"),
        (lambda r: r["profiles"].update(bad={"finetune": {"kd_alpha": 2}}), "profiles.bad.finetune.kd_alpha=2"),
        (lambda r: r["train"].pop("lr"), "missing key train.lr"),
        (lambda r: r["model"].update(name=True), "model.name=True"),
        (lambda r: r["train"].update(warmup_epochs=9), "train.warmup_epochs=9 exceeds train.epochs=8"),
        (lambda r: r["finetune"].update(lr=float("inf")), "finetune.lr=inf"),
        (lambda r: r["finetune"].update(kd_temperature=float("nan")), "finetune.kd_temperature=nan"),
        (lambda r: r.update(seed=2**70), "seed=1180591620717411303424"),
        (lambda r: r["data"].update(subset=60001), "data.subset=60001 is not allowed for fashion_mnist"),
        (lambda r: r["data"].update(test_subset=9), "data.test_subset=9 is not allowed for fashion_mnist"),
        (lambda r: r["decompose"].update(segment_len=100000), "decompose.segment_len=100000"),
        (lambda r: r["sweep"].update(n_basis=[256]), "sweep.n_basis contains 256"),
        (lambda r: r["decompose"].update(assignment="soft"), "decompose.assignment='soft'"),
        (lambda r: r["finetune"].update(group_lasso=-0.1), "finetune.group_lasso=-0.1"),
        (lambda r: r["finetune"].update(harden_at=0), "finetune.harden_at=0 is not allowed"),
        (lambda r: r["finetune"].update(harden_at=1.5), "finetune.harden_at=1.5 is not allowed"),
        (lambda r: r["finetune"].update(alternate={"coef_steps": 2}), "finetune.alternate={'coef_steps': 2}"),
        (lambda r: r["finetune"].update(alternate={"coef_steps": 0, "basis_steps": 1}), "finetune.alternate="),
        (lambda r: r["finetune"].update(alternate=5), "finetune.alternate=5 is not allowed; allowed: null"),
    ],
)
def test_bad_params_give_one_line_naming_the_problem(tmp_path, edit, message):
    raw = copy.deepcopy(RAW)
    edit(raw)
    with pytest.raises(params.ParamsError) as info:
        params.load(write(tmp_path, raw))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_stage_with_bad_params_exits_before_touching_earlier_outputs(tmp_path, capsys):
    raw = copy.deepcopy(RAW)
    raw["decompose"]["coef_quant"] = "log"
    out = tmp_path / "decompose"
    out.mkdir()
    (out / "model.pt").write_bytes(b"earlier result")
    code = cli(["decompose", "--params", str(write(tmp_path, raw)), "--out", str(out)])
    assert code == 2
    assert "decompose.coef_quant='log'" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == b"earlier result"


def test_unknown_profile_on_the_command_line(tmp_path, capsys):
    code = cli(["train", "--params", str(ROOT / "params.yaml"), "--profile", "nope", "--out", str(tmp_path / "x")])
    assert code == 2 and "unknown profile 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_fingerprint_is_stable_and_sensitive():
    a = params.fingerprint({"lr": 0.1, "epochs": 2}, 0)
    assert a == params.fingerprint({"epochs": 2, "lr": 0.1}, 0)
    assert a != params.fingerprint({"lr": 0.1, "epochs": 3}, 0)
