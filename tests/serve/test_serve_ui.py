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
