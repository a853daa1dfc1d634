"""The reviewer kit: LICENSE, CITATION.cff, ARTIFACT.md, docs/method.md, and reference outputs DVC hands to git."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METHOD_SECTIONS = ["1", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "2.3", "2.4", "3"]


def test_license_is_mit_for_the_code_and_names_the_papers_licence():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "CC BY-NC-SA 4.0" in text and "not\nincluded" in text
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text(), "pyproject.toml says the same"


def test_citation_cff_cites_the_software_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    paper = cff["preferred-citation"]
    assert paper["type"] == "article" and paper["year"] == 2024 and paper["license"] == "CC-BY-NC-SA-4.0"
    assert "arXiv:2407.03738" in [i["value"] for i in paper["identifiers"]]
    assert [a["family-names"] for a in paper["authors"]][0] == "Eldebiky"
    version = re.search(r'__version__ = "(.+)"', (ROOT / "basisn" / "__init__.py").read_text()).group(1)
    assert str(cff["version"]) == version, "CITATION.cff's version is the package's"


def test_method_document_has_the_section_numbers_the_code_cites():
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\. ", (ROOT / "docs" / "method.md").read_text(), re.M)
    headings += re.findall(r"^### (\d+\.\d+) ", (ROOT / "docs" / "method.md").read_text(), re.M)
    assert sorted(set(headings), key=lambda s: [int(p) for p in s.split(".")]) == METHOD_SECTIONS
    cited = set()
    for path in [
        *ROOT.glob("basisn/**/*.py"),
        *ROOT.glob("notebooks/*.py"),
        *ROOT.glob("*.md"),
        *ROOT.glob("docs/*.md"),
    ]:
        cited |= set(re.findall(r"docs/method\.md §(\d+(?:\.\d+)?)", path.read_text()))
    assert cited <= set(METHOD_SECTIONS), f"cited sections that do not exist: {sorted(cited - set(METHOD_SECTIONS))}"


def test_artifact_md_gives_the_two_commands_and_the_comparison():
    text = (ROOT / "ARTIFACT.md").read_text()
    for needed in ("make repro", "make test", "dvc status", "dvc metrics diff", "git diff --stat paper_figures/"):
        assert needed in text, needed
    for path in re.findall(
        r"`((?:docs/|notebooks/|paper_figures/|outputs/)?[\w./-]+\.(?:md|toml|yml|yaml|lock|cff))`", text
    ):
        if not path.startswith(("paper_figures/", "outputs/")) and path not in {"dvc.lock", "CLAIMS.md"}:
            assert (ROOT / path).exists(), f"ARTIFACT.md names {path}, which is not in the repository"


def reference_outputs() -> list[str]:
    """Every stage output DVC hands to git (cache: false): the reference results."""
    found = []
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        for key in ("outs", "metrics"):
            for entry in stage.get(key, []):
                if isinstance(entry, dict):
                    path, options = next(iter(entry.items()))
                    if (options or {}).get("cache") is False:
                        found.append(path)
    return found


def test_reference_outputs_are_git_tracked_not_cached():
    references = reference_outputs()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if path.startswith("paper_figures/") or path.endswith("metrics.json") or path == "CLAIMS.md":
                assert path in references, f"{name}: {path} must be `cache: false` (a reference output in git)"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *references], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert not ignored, f".gitignore hides reference outputs: {ignored}"
    assert subprocess.run(["git", "check-ignore", "-q", "outputs/train/model.pt"], cwd=ROOT).returncode == 0


def test_nothing_in_the_repository_points_at_a_file_outside_it():
    """A reviewer's clone has only the repository: no tracked file may cite a design note or a workspace path."""
    outside = ("DESIGN" + ".md", "../" + "shared", "/" + "work/")  # split so this file does not match itself
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for name in filter(None, tracked.stdout.split("\0")):
        try:
            text = (ROOT / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError):  # figures (PNG/PDF); a file deleted but not committed
            continue
        offenders += [f"{name}: {needle}" for needle in outside if needle in text]
    assert not offenders, offenders


def test_every_stage_depends_on_the_whole_package_and_dvc_ignores_bytecode():
    """No code change can leave results DVC calls up to date: each `basisn ...` stage depends on basisn/ itself."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if stage["cmd"].startswith("basisn "):
            assert "basisn" in stage["deps"], f"stage {name} must depend on the whole basisn/ package"
            assert not [d for d in stage["deps"] if d.startswith("basisn/")], f"{name}: single files are redundant"
    # bytecode, and JupyterLab's autosave copies (make lab opens the repository root) are not code
    for generated in ("basisn/__pycache__/cli.cpython-311.pyc", "basisn/.ipynb_checkpoints/cli-checkpoint.py"):
        ignored = subprocess.run(
            [sys.executable, "-m", "dvc", "check-ignore", generated], cwd=ROOT, capture_output=True, text=True
        )
        assert ignored.returncode == 0, f".dvcignore must drop {generated} from the `basisn` dependency's hash"


def test_make_archive_packs_head_with_checksums_and_refuses_a_dirty_tree(tmp_path):
    """`make archive` (ARTIFACT.md A.2): a tarball of HEAD with the reference outputs, its SHA-256 and every file's."""
    import tarfile

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)  # HEAD, without this tree's edits
    out = tmp_path / "dist"
    made = subprocess.run(["make", "--no-print-directory", "archive", f"ARCHIVE_DIR={out}"], cwd=clone,
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=clone, capture_output=True, text=True)
    name = f"basisn-{rev.stdout.strip()}"
    with tarfile.open(out / f"{name}.tar.gz") as archive:
        names = set(archive.getnames())
    tracked = subprocess.run(["git", "ls-files"], cwd=clone, capture_output=True, text=True).stdout.split()
    assert {f"{name}/{path}" for path in tracked} <= names  # every tracked file, the references included
    assert f"{name}/CLAIMS.md" in names and f"{name}/dvc.lock" in names
    assert subprocess.run(["sha256sum", "--quiet", "-c", f"{name}.tar.gz.sha256"], cwd=out).returncode == 0
    assert subprocess.run(["sha256sum", "--quiet", "-c", str(out / f"{name}.files.sha256")], cwd=clone).returncode == 0
    (clone / "README.md").write_text("edited\n")
    refused = subprocess.run(["make", "--no-print-directory", "archive", f"ARCHIVE_DIR={tmp_path / 'dist2'}"],
                             cwd=clone, capture_output=True, text=True)  # fmt: skip
    assert refused.returncode != 0 and "uncommitted changes" in refused.stdout
    assert not (tmp_path / "dist2").exists()
