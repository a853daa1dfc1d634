"""`make lab` as a reader uses it: JupyterLab on the repository root, a `.py` notebook opened as a notebook, and run
from a kernel that JupyterLab starts in notebooks/.

One JupyterLab server on 127.0.0.1 (a free port, a random token, settings and runtime files in a temporary
directory; the shipped default-viewer setting jupyter/lab/settings/ as its app settings) is started for the module
and stopped at its end. Everything goes through its REST API, and the kernel through the server's websocket, the
way the browser does it. Also: repo_root/require of basisn.notebooks, without a server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jupytext
import pytest
import requests

from basisn.notebooks import MissingStageOutput, repo_root, require, stage_writing

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "jupyter" / "lab" / "settings"
KERNEL = "basisn"
NOTEBOOK = "notebooks/headline.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on the repository root; yields (base url, token); always stopped."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.fail(f"jupyter kernel {KERNEL!r} is not installed: run `make venv` (it installs it into .venv)")
    home = tmp_path_factory.mktemp("lab")
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
    ]
    args += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0"]
    args += [f"--LabApp.app_settings_dir={SETTINGS}", f"--LabApp.user_settings_dir={home / 'user-settings'}"]
    args += [f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(args, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def api(lab, method: str, path: str, **kwargs) -> requests.Response:
    base, token = lab
    response = requests.request(
        method, f"{base}{path}", headers={"Authorization": f"token {token}"}, timeout=30, **kwargs
    )
    response.raise_for_status()
    return response


def test_lab_serves_the_repository_root(lab):
    names = {item["name"] for item in api(lab, "GET", "/api/contents/").json()["content"]}
    assert {"notebooks", "dvc.yaml", "params.yaml"} <= names


def test_py_notebook_opens_as_a_notebook(lab):
    model = api(lab, "GET", f"/api/contents/{NOTEBOOK}", params={"type": "notebook", "content": 1}).json()
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert len(cells) == len(jupytext.read(ROOT / NOTEBOOK).cells)
    assert [c for c in cells if "parameters" in c["metadata"].get("tags", [])], "the parameters cell keeps its tag"
    assert model["content"]["metadata"]["kernelspec"]["name"] == KERNEL


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.py")))
def test_saving_a_notebook_unchanged_leaves_its_file_byte_identical(lab, notebook):
    """What JupyterLab's save does: the notebook model read through jupytext's contents manager, written back.
    The file must not change (no jupytext version header), or every tab shows as modified in git."""
    path = ROOT / "notebooks" / notebook
    before = path.read_bytes()
    model = api(lab, "GET", f"/api/contents/notebooks/{notebook}", params={"type": "notebook", "content": 1}).json()
    try:
        saved = api(lab, "PUT", f"/api/contents/notebooks/{notebook}",
                    json={"type": "notebook", "format": "json", "content": model["content"]})  # fmt: skip
        assert saved.ok, saved.text
        assert path.read_bytes() == before, f"saving {notebook} from JupyterLab changed the file"
    finally:
        if path.read_bytes() != before:
            path.write_bytes(before)  # the repository stays as it was, whatever the outcome


def test_shipped_setting_opens_py_files_with_the_notebook_viewer(lab):
    plugin = api(lab, "GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin").json()
    # overrides.json changes the schema's default (what a user with no own setting gets)
    assert plugin["schema"]["properties"]["defaultViewers"]["default"]["python"] == "Jupytext Notebook"
    assert "defaultViewers" not in plugin["settings"], "no user setting in play: the shipped default does it"
    factories = api(lab, "GET", "/lab/api/settings/jupyterlab-jupytext:plugin")
    assert factories.ok, "jupytext's JupyterLab extension (which provides that viewer) is installed"


def execute(socket_, code: str, timeout: float = 120) -> list[dict]:
    """Run `code` on the kernel behind the websocket; returns its iopub messages; fails on an error."""
    msg_id = uuid.uuid4().hex
    socket_.send(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": msg_id},
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}},
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    outputs, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(socket_.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        if kind == "error":
            pytest.fail(f"cell failed: {message['content']['ename']}: {message['content']['evalue']}\n{code[:500]}")
        if message["channel"] == "iopub" and kind in {"stream", "execute_result", "display_data"}:
            outputs.append(message)
        if message["channel"] == "iopub" and kind == "status" and message["content"]["execution_state"] == "idle":
            return outputs
    pytest.fail(f"cell did not finish in {timeout} s:\n{code[:500]}")


def test_notebook_runs_in_a_kernel_started_in_notebooks(lab, tmp_path):
    import websocket

    session = api(
        lab,
        "POST",
        "/api/sessions",
        json={"path": NOTEBOOK, "name": Path(NOTEBOOK).name, "type": "notebook", "kernel": {"name": KERNEL}},
    ).json()
    kernel = session["kernel"]["id"]
    base, token = lab
    socket_ = websocket.create_connection(
        f"{base.replace('http', 'ws')}/api/kernels/{kernel}/channels?token={token}", timeout=120
    )
    try:
        started_in = execute(socket_, "import os; print(os.getcwd())")
        assert started_in[0]["content"]["text"].strip() == str(ROOT / "notebooks"), "JupyterLab's kernel directory"
        out = tmp_path / "figures"
        for cell in jupytext.read(ROOT / NOTEBOOK).cells:
            if cell.cell_type != "code":
                continue
            execute(socket_, cell.source)
            if "parameters" in cell.metadata.get("tags", []):  # what papermill injects: the fixtures, our out_dir
                execute(socket_, f"hardware_dir = 'tests/fixtures/hardware'\nout_dir = {str(out)!r}")
        assert {p.suffix for p in out.iterdir()} == {".csv", ".md", ".tex", ".pdf", ".png"}
        where = execute(socket_, "import os; print(os.getcwd())")
        assert where[0]["content"]["text"].strip() == str(ROOT), "the notebook moved to the repository root"
    finally:
        socket_.close()
        api(lab, "DELETE", f"/api/sessions/{session['id']}")


# ---- basisn.notebooks path helpers (no server) ------------------------------------------------------------------
def test_repo_root_is_found_from_notebooks_and_from_anywhere(tmp_path):
    assert repo_root(ROOT / "notebooks") == ROOT
    assert repo_root(tmp_path) == ROOT, "outside the repository: the checkout basisn was imported from"


def test_require_names_the_stage_that_writes_a_missing_input(tmp_path):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text("{}\n")
    assert stage_writing("outputs/evaluate/metrics.json", tmp_path) == "evaluate"
    assert stage_writing("outputs/hardware/hw_eval.json", tmp_path) == "hardware"
    with pytest.raises(
        MissingStageOutput, match=r"^outputs/hardware/hw_eval\.json not found: run `dvc repro hardware`"
    ):
        require("params.yaml", "outputs/hardware/hw_eval.json", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="no dvc.yaml stage writes it"):
        require("tests/fixtures/missing.csv", root=tmp_path)
    error = MissingStageOutput("x not found: run `dvc repro train` first")
    assert error._render_traceback_() == ["MissingStageOutput: x not found: run `dvc repro train` first"]
    require("params.yaml", root=tmp_path)  # present: nothing raised
