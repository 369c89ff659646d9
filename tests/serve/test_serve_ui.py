"""The demo's logic without a browser: reading uploads, folding <think> apart from <answer>."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmai.serve.images import ImageLimits
from gmai.serve.ui import DemoSession, load_scan, split_reasoning


@pytest.mark.parametrize("reply,expected", [
    ("<think>The lung is dark.</think><answer>CT</answer>", ("The lung is dark.", "CT")),
    ("<think> a\nb </think>\n<answer> yes </answer>", ("a\nb", "yes")),
    ("plain reply", ("", "plain reply")),
    ("<think>unfinished thought", ("unfinished thought", "")),
    ("<think>t</think> answer without tags", ("t", "answer without tags")),
])
def test_split_reasoning(reply, expected):
    assert split_reasoning(reply) == expected


def test_png_upload(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30).astype(np.uint8)).save(path)
    scan = load_scan(path)
    assert scan.kind == "image" and scan.frames[0].shape == (20, 30) and scan.header == {}


def test_dicom_upload_shows_only_deidentified_header():
    from pydicom.data import get_testdata_file

    scan = load_scan(get_testdata_file("CT_small.dcm"))
    assert scan.kind == "dicom" and scan.header["modality"] == "CT"
    assert scan.frames[0].dtype == np.uint8 and scan.frames[0].shape == (128, 128)
    flat = repr(scan.header)
    assert "CompressedSamples" not in flat and "patient" not in flat.lower()


def test_nifti_upload_gives_one_frame_per_axial_slice():
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    scan = load_scan(path)
    assert scan.kind == "nifti" and len(scan.frames) == 25
    assert all(f.dtype == np.uint8 for f in scan.frames)


def test_unreadable_and_oversize_uploads_are_explained(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_scan(bad)
    big = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(big)
    with pytest.raises(ValueError, match="exceeds"):
        load_scan(big, ImageLimits(max_image_pixels=10_000))


class ThinkingBackend:
    def __init__(self):
        self.requests = []

    def generate(self, requests, config=None, batch_size=16):
        self.requests += requests
        return ["<think>Dark fields are air.</think><answer>Chest CT.</answer>"] * len(requests)


def test_session_sends_the_frame_and_folds_reasoning_apart():
    backend = ThinkingBackend()
    reasoning, answer = DemoSession(backend).answer("What is this?", [], np.zeros((8, 8), np.uint8))
    assert (reasoning, answer) == ("Dark fields are air.", "Chest CT.")
    request = backend.requests[0]
    assert len(request.images) == 1 and request.images[0].mode == "RGB"
    assert request.messages[-1] == {"role": "user", "content": "What is this?"}



# ------------------------------------------------------------------------------------------------
# Authentication off loopback and raw uploads (issue #12)


def test_demo_ui_refuses_a_public_host_without_a_password(monkeypatch):
    from typer.testing import CliRunner

    import gmai.serve.ui as ui
    from gmai.cli import app

    launched = []
    monkeypatch.setattr(ui, "launch_demo", lambda *a, **kw: launched.append(kw))
    monkeypatch.delenv("GMAI_DEMO_PASSWORD", raising=False)
    refused = CliRunner().invoke(app, ["demo-ui", "ckpt", "--host", "0.0.0.0"])
    assert refused.exit_code != 0 and "without a password" in refused.output and not launched
    ok = CliRunner().invoke(app, ["demo-ui", "ckpt", "--host", "0.0.0.0"], env={"GMAI_DEMO_PASSWORD": "s3cret"})
    assert ok.exit_code == 0 and launched[-1]["password"] == "s3cret"
    assert CliRunner().invoke(app, ["demo-ui", "ckpt"]).exit_code == 0  # loopback: no password needed


def test_demo_ui_takes_secrets_from_files_or_the_environment_never_from_argv(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import gmai.serve.ui as ui
    from gmai.cli import app

    launched = []
    monkeypatch.setattr(ui, "launch_demo", lambda *a, **kw: launched.append(kw))
    monkeypatch.delenv("GMAI_DEMO_PASSWORD", raising=False)
    monkeypatch.delenv("GMAI_API_KEY", raising=False)
    for option, env in (("--password", "GMAI_DEMO_PASSWORD"), ("--api-key", "GMAI_API_KEY")):
        refused = CliRunner().invoke(app, ["demo-ui", "ckpt", option, "s3cret"])
        assert refused.exit_code == 2 and not launched
        assert refused.output == (f"error: {option} would put the secret in the process list, where any local user "
                                  f"can read it: set {env} or give {option}-file FILE\n")
    (tmp_path / "pw").write_text("file-pass\n")
    (tmp_path / "key").write_text(" sk-file \n")
    ok = CliRunner().invoke(app, ["demo-ui", "http://127.0.0.1:9/v1", "--host", "0.0.0.0", "--password-file",
                                  str(tmp_path / "pw"), "--api-key-file", str(tmp_path / "key")])
    assert ok.exit_code == 0 and launched[-1]["password"] == "file-pass" and launched[-1]["api_key"] == "sk-file"
    env = CliRunner().invoke(app, ["demo-ui", "ckpt"], env={"GMAI_API_KEY": "sk-env"})
    assert env.exit_code == 0 and launched[-1]["api_key"] == "sk-env"
    (tmp_path / "empty").write_text("\n")
    empty = CliRunner().invoke(app, ["demo-ui", "ckpt", "--password-file", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and empty.output == f"error: --password-file {tmp_path / 'empty'} is empty\n"


@pytest.mark.slow
def test_no_secret_on_the_demo_processes_command_lines(tmp_path):
    """The real `gmai demo-ui` process (against an OpenAI-compatible URL, so no model loads), as
    test_no_process_of_the_server_has_the_key_on_its_command_line does for `gmai serve`."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx
    import psutil

    password, key = "pw-cmdline-7f3a", "sk-cmdline-91c2"
    (tmp_path / "pw").write_text(password)
    (tmp_path / "key").write_text(key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(ui_module_file()).parents[2]), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GMAI_API_KEY", None)
    env.pop("GMAI_DEMO_PASSWORD", None)
    proc = subprocess.Popen([sys.executable, "-m", "gmai.cli", "demo-ui", "http://127.0.0.1:9/v1", "--port", str(port),
                             "--password-file", str(tmp_path / "pw"), "--api-key-file", str(tmp_path / "key")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "gmai demo-ui exited"
                time.sleep(0.5)
        else:
            pytest.fail("gmai demo-ui did not answer in 120 s")
        assert page.status_code == 200
        root = psutil.Process(proc.pid)
        lines = [" ".join(p.cmdline()) for p in (root, *root.children(recursive=True))]
        assert str(tmp_path / "pw") in lines[0]  # the check reads the right command line
        assert not any(password in line or key in line for line in lines)
        raw = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert password.encode() not in raw and key.encode() not in raw
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ui_module_file() -> str:
    import gmai.serve.ui as ui

    return ui.__file__


def test_launch_hands_gradio_a_password_check(monkeypatch):
    import gradio as gr

    import gmai.infer
    import gmai.serve.ui as ui

    seen = {}
    monkeypatch.setattr(gmai.infer, "load_backend", lambda *a, **kw: object())
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    ui.launch_demo("ckpt", host="0.0.0.0", password="s3cret")
    assert seen["auth"]("anyone", "s3cret") and not seen["auth"]("anyone", "wrong")
    with pytest.raises(ValueError, match="without a password"):
        ui.launch_demo("ckpt", host="0.0.0.0")


def test_raw_upload_is_deleted_once_read(tmp_path):
    from pydicom.data import get_testdata_file

    from gmai.serve.ui import read_upload

    upload = tmp_path / "DOE_JOHN_19600101.dcm"
    upload.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert read_upload(upload).kind == "dicom" and not upload.exists()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"junk")
    with pytest.raises(ValueError):
        read_upload(broken)
    assert not broken.exists()
