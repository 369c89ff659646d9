"""`gmai demo-ui`: a Gradio web demo for clinicians and researchers.

Upload a PNG/JPEG, DICOM or NIfTI file; see the image as the model sees it (normalised to 8-bit
by :mod:`gmai.data.imaging`, with a slice slider for volumes and multi-frame DICOM) and, for
DICOM, the de-identified header summary; ask questions about it. A reply's ``<think>`` reasoning
is shown folded apart (an accordion) from its ``<answer>``.

Research demo, not a medical device. Uploads are read only through gmai.data.imaging (DICOM
headers de-identified on read, the same path as the data engine's; only numbers and coded words are
shown), and the raw upload is deleted as soon as it has been read. Off loopback the demo needs a
password (``--password-file`` or ``GMAI_DEMO_PASSWORD``; never on the command line), as ``gmai serve``
needs an API key.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmai.serve.errors import APIError
from gmai.serve.images import ImageLimits, read_dicom_checked

MAX_VOXELS = 512 * 512 * 1024  # a NIfTI volume larger than this is refused (memory per session)
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".gz"]
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)


def split_reasoning(reply: str) -> tuple[str, str]:
    """``(reasoning, answer)`` from a reply in the GMAI-VL-R1 format ``<think>..</think><answer>..</answer>``.
    A reply without tags is all answer; an unclosed tag runs to the end of the reply."""
    think = _THINK.search(reply)
    answer = _ANSWER.search(reply)
    reasoning = think.group(1).strip() if think else ""
    if answer:
        return reasoning, answer.group(1).strip()
    rest = _THINK.sub("", reply) if think else reply
    return reasoning, re.sub(r"</?(think|answer)>", "", rest, flags=re.I).strip()


@dataclass
class Scan:
    """An upload, display-ready: 2-D uint8 frames (or slices), and what may be shown about it."""

    frames: list[np.ndarray] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"
    note: str = ""


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def load_scan(path: str | Path, limits: ImageLimits = ImageLimits()) -> Scan:
    """Read an upload through gmai.data.imaging. Raises ValueError naming the file and the reason."""
    from gmai.data import imaging

    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            shape = imaging.nifti_shape(path)
            if int(np.prod(shape)) > MAX_VOXELS:
                raise ValueError(f"{path.name}: volume {shape} exceeds {MAX_VOXELS} voxels")
            volume = imaging.load_nifti(path)
            volume8, how = imaging.volume_to_uint8(volume, window=None, modality="")
            slices = [imaging.volume_slice(volume8, 2, i) for i in range(volume8.shape[2])]
            return Scan(slices, {"shape": list(shape), "orientation": "RAS+, axial slices"}, "nifti",
                        f"NIfTI volume, {len(slices)} axial slices; intensities: {how}")
        if _is_dicom(path):
            dicom = read_dicom_checked(path, limits, path.name)
            return Scan(list(dicom.frames), dict(dicom.summary), "dicom",
                        f"DICOM {dicom.modality}, {len(dicom.frames)} frame(s); intensities: {dicom.windowing}")
        from PIL import Image

        with Image.open(path) as probe:  # header only: refuse a decompression bomb before decoding
            width, height = probe.size
        if width * height > limits.max_image_pixels:
            raise ValueError(f"{path.name}: {width}x{height} exceeds {limits.max_image_pixels} pixels")
        pixels = imaging.read_image(path)
        return Scan([pixels], {}, "image", f"image {pixels.shape[1]}x{pixels.shape[0]}")
    except imaging.ImageReadError as err:
        raise ValueError(f"{path.name}: {err.reason}") from None
    except APIError as err:
        raise ValueError(err.message) from None
    except OSError as err:
        raise ValueError(f"{path.name}: not a readable image ({type(err).__name__})") from None


def read_upload(path: str | Path, limits: ImageLimits = ImageLimits()) -> Scan:
    """:func:`load_scan`, then the raw upload is deleted: the only copy the demo keeps is the display-ready,
    de-identified one in the session."""
    try:
        return load_scan(path, limits)
    finally:
        Path(path).unlink(missing_ok=True)


def demo_auth(host: str, password: str | None, insecure_no_auth: bool = False) -> Any:
    """Gradio's ``auth`` for this host: a password check, or None on loopback without a password.
    Raises ValueError for a non-loopback host without a password (unless ``insecure_no_auth``)."""
    if password:
        def check(_user: str, given: str) -> bool:  # any user name; the password is what counts
            return hmac.compare_digest(given.encode(), password.encode())

        return check
    from gmai.serve.cli import _is_loopback  # the rule `gmai serve` applies to its API key

    if not _is_loopback(host) and not insecure_no_auth:
        raise ValueError(f"refusing to serve the demo on {host} without a password: give --password-file or "
                         "GMAI_DEMO_PASSWORD (or --insecure-no-auth)")
    return None


class DemoSession:
    """The demo's logic without Gradio (testable): one model, the chat turns, the reasoning."""

    def __init__(self, backend: Any, max_new_tokens: int = 256):
        self.backend, self.max_new_tokens = backend, max_new_tokens

    def answer(self, question: str, turns: list[dict], frame: np.ndarray | None) -> tuple[str, str]:
        """``(reasoning, answer)`` for ``question`` after the earlier ``turns`` (plain role/content dicts)."""
        from PIL import Image

        from gmai.infer import ChatRequest, GenerationConfig

        images = [Image.fromarray(frame).convert("RGB")] if frame is not None else []
        request = ChatRequest(messages=[*turns, {"role": "user", "content": question}], images=images)
        reply = self.backend.generate([request], GenerationConfig(max_new_tokens=self.max_new_tokens))[0]
        return split_reasoning(reply)


def build_demo(backend: Any, max_new_tokens: int = 256, limits: ImageLimits = ImageLimits()):
    import gradio as gr

    session = DemoSession(backend, max_new_tokens)

    def on_upload(file_path):
        if not file_path:
            return None, gr.Slider(visible=False), None, {}, ""
        try:
            scan = read_upload(file_path, limits)
        except ValueError as err:
            return None, gr.Slider(visible=False), None, {}, f"**Could not read the upload:** {err}"
        middle = len(scan.frames) // 2
        slider = gr.Slider(minimum=0, maximum=max(1, len(scan.frames) - 1), value=middle, step=1,
                           visible=len(scan.frames) > 1, label="Slice / frame")
        header = scan.header if scan.kind == "dicom" else {}
        return scan, slider, scan.frames[middle], header, scan.note

    def on_slice(scan: Scan | None, index):
        if scan is None or not scan.frames:
            return None
        return scan.frames[int(min(max(0, index or 0), len(scan.frames) - 1))]

    def on_ask(question, turns, scan: Scan | None, index):
        question = (question or "").strip()
        turns = list(turns or [])
        if not question:
            return gr.update(), turns, gr.update(), question
        frame = on_slice(scan, index)
        # the image goes with the first question about it; later turns keep it as context
        reasoning, answer = session.answer(question, turns, frame)
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        shown = reasoning or "_No `<think>` reasoning in this reply._"
        return [dict(t) for t in turns], turns, shown, ""

    def on_clear():
        return [], [], "", ""

    with gr.Blocks(title="gmai demo") as demo:
        gr.Markdown("## gmai: ask a medical vision-language model about a scan\n"
                    "Research demo, **not for clinical use**. DICOM headers are de-identified on read; only "
                    "non-identifying fields are shown.")
        scan_state, turns_state = gr.State(None), gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Scan: PNG, JPEG, DICOM (.dcm) or NIfTI (.nii, .nii.gz)",
                                 file_types=UPLOAD_TYPES, type="filepath", elem_id="upload")
                slider = gr.Slider(minimum=0, maximum=1, value=0, step=1, visible=False, label="Slice / frame",
                                   elem_id="slice")
                preview = gr.Image(label="Normalised image (what the model sees)", type="numpy", interactive=False,
                                   elem_id="preview", height=320)
                note = gr.Markdown(elem_id="note")
                header = gr.JSON(label="DICOM header summary (de-identified)", elem_id="header")
            with gr.Column(scale=1):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=360)
                with gr.Accordion("Reasoning (<think>)", open=False, elem_id="reasoning-box"):
                    reasoning = gr.Markdown(elem_id="reasoning")
                question = gr.Textbox(label="Question", placeholder="e.g. What modality is this? Is there a lesion?",
                                      elem_id="question")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("Clear chat", elem_id="clear")
        upload.change(on_upload, [upload], [scan_state, slider, preview, header, note])
        slider.change(on_slice, [scan_state, slider], [preview])
        ask.click(on_ask, [question, turns_state, scan_state, slider], [chatbot, turns_state, reasoning, question])
        question.submit(on_ask, [question, turns_state, scan_state, slider],
                        [chatbot, turns_state, reasoning, question])
        clear.click(on_clear, [], [chatbot, turns_state, reasoning, question])
    return demo


def launch_demo(checkpoint: str, host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None,
                max_new_tokens: int = 256, device: str | None = None, torch_threads: int = 0,
                password: str | None = None, insecure_no_auth: bool = False) -> None:
    auth = demo_auth(host, password, insecure_no_auth)  # before loading a model: fail fast
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home; the machine may be offline
    from gmai.infer import load_backend

    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    backend = load_backend(checkpoint, api_key=api_key, device=device)
    demo = build_demo(backend, max_new_tokens=max_new_tokens)
    # one generation at a time (the model is shared); uploads bounded in size
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.launch(server_name=host, server_port=port, max_file_size="200mb", ssr_mode=False, show_error=True,
                auth=auth, auth_message="gmai demo: enter the demo password (any user name)" if auth else None)
