"""Checks every model family runs after training: a few real VQA-RAD items through the eval runner, and one
request through the OpenAI-compatible server (in process), both with the checkpoint's own processor/template."""

import base64
import io
import subprocess
import sys
import textwrap

VQA_RAD = "/work/shared/data/vqa-rad"  # the real benchmark (read in place, never copied)


def assert_evaluates(checkpoint, out):
    from gmai.eval.runner import BenchSpec, EvalOptions, run_eval
    from gmai.infer import GenerationConfig

    report = run_eval(str(checkpoint), [BenchSpec("vqa-rad", VQA_RAD)], out, EvalOptions(limit=4, batch_size=2),
                      config=GenerationConfig(max_new_tokens=4, temperature=0.0))
    bench = report["benchmarks"]["vqa-rad"]
    assert bench["n_items"] == 4 and bench["n_failed"] == 0 and bench["n_scored"] == 4


def assert_serves(checkpoint):
    from fastapi.testclient import TestClient
    from PIL import Image

    from gmai.infer.local import LocalBackend
    from gmai.serve.api import ServeConfig, create_app

    buf = io.BytesIO()
    Image.new("RGB", (90, 70), (120, 30, 30)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {"model": "gmai", "max_tokens": 3, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What modality is this?"}]}]}
    with TestClient(create_app(LocalBackend.from_checkpoint(checkpoint), ServeConfig())) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["role"] == "assistant" and response.json()["usage"]["completion_tokens"] > 0


def assert_grpo_runs(checkpoint, corpus, out):
    """GMAI-VL-R1's GRPO, 2 steps through `gmai rl train` (choice questions from the corpus), and its result reloads."""
    import json

    from transformers import AutoModelForImageTextToText
    from typer.testing import CliRunner

    from gmai.cli import app
    from gmai.rl.questions import RL_FILE, build_questions

    build_questions(corpus, out / "q", kinds=("choice",), seed=0)
    result = CliRunner().invoke(app, [
        "rl", "train", "recipes/r1-tiny.yaml", "grpo.max_steps=2", "grpo.max_completion_length=8", "grpo.beta=0.04",
        "grpo.answer_types=[choice]", "--out", str(out / "run"), "--model", str(checkpoint),
        "--questions", str(out / "q" / RL_FILE)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    AutoModelForImageTextToText.from_pretrained(out / "run" / "final")
    return out / "run" / "final"


def stage3_on_base(base, data, out, *extra):
    """Stage III only, 2 steps, starting from a whole-VLM folder (``model.base``)."""
    from gmai.train.config import load_recipe
    from gmai.train.trainer import train

    overrides = [f"model.base={base}", "stages.0.enabled=false", "stages.1.enabled=false", "stages.2.enabled=false",
                 "stages.3.max_steps=2", "stages.3.per_device_batch_size=2", "stages.3.packing=false",
                 "stages.3.save_every=0", "run.tensorboard=false", "run.plot=false", *extra]
    return train(load_recipe("recipes/tiny.yaml", overrides), data, out)


# Plain transformers, as a user would after training: AutoProcessor + AutoModelForImageTextToText, the
# checkpoint's own chat template, one image; run in a subprocess that never imports gmai.
PLAIN_RELOAD = """
import sys
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
for path in PATHS:
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    enc = processor(text=[text], images=[Image.new("RGB", (90, 70))], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1] and "gmai" not in sys.modules
    print("OK", type(model).__name__)
"""


def assert_plain_reload(paths, class_name, script=PLAIN_RELOAD):
    code = f"PATHS = {[str(p) for p in paths]!r}\n" + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"OK {class_name}") == len(paths), result.stdout
