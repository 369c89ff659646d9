"""Report helpers the demo reuses: tables, plot, gallery, HTML page; and an end-to-end run on a real
(tiny, random) checkpoint through gmai.infer."""

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from gmai.cli import app
from gmai.eval import report as rep

BENCH = {"benchmark": "vqa-rad", "rules": {
    "gmai@1": {"accuracy": 0.5, "correct": 2, "n": 4, "by_type": {"closed": {"accuracy": 1.0, "correct": 2, "n": 2},
                                                                  "open": {"accuracy": 0.0, "correct": 0, "n": 2}}},
    "medevalkit@1": {"accuracy": 0.25, "correct": 1, "n": 4, "by_type": {}}},
    "baselines": {"majority": {"rules": {"gmai@1": {"accuracy": 0.25}, "medevalkit@1": {"accuracy": 0.25}}},
                  "question-only": {"rules": {"gmai@1": {"accuracy": 0.75}}}}}


def rows_with_images(tmp_path: Path):
    rows = []
    for i in range(6):
        path = tmp_path / f"im{i}.png"
        Image.new("RGB", (40, 30), (i * 40, 20, 20)).save(path)
        rows.append({"benchmark": "vqa-rad", "qid": str(i), "question": f"Is there a <mass> {i}?", "answer": "yes",
                     "prediction": "yes" if i % 2 else "no", "error": None, "images": [str(path)],
                     "verdicts": {"gmai@1": bool(i % 2)}})
    return rows


def test_tables_and_baselines():
    headers, rows = rep.scores_with_baselines(BENCH)
    assert headers == ["rule", "model", "majority", "question-only"]
    assert rows == [["gmai@1", "50.0", "25.0", "75.0"], ["medevalkit@1", "25.0", "25.0", "n/a"]]
    md = rep.markdown_table(headers, rows)
    assert md.splitlines()[1] == "|---|---|---|---|" and "| gmai@1 | 50.0 | 25.0 | 75.0 |" in md
    runs = [{"model": "a", "benchmarks": {"vqa-rad": BENCH}}, {"model": "b", "benchmarks": {}}]
    headers, rows = rep.comparison_table(runs, names=["I", "I+II"], by_type=True)
    assert headers == ["run", "vqa-rad", "vqa-rad closed", "vqa-rad open"]
    assert rows == [["I", "50.0", "100.0", "0.0"], ["I+II", "-", "-", "-"]]


def test_gallery_plot_and_html(tmp_path):
    examples = rep.example_gallery(rows_with_images(tmp_path), n=4)
    assert len(examples) == 4 and sum(e["correct"] for e in examples) == 2  # half right, half wrong
    assert all(e["thumbnail"].startswith("data:image/jpeg;base64,") for e in examples)
    png = rep.plot_rule_scores(BENCH, tmp_path / "plot.png")
    assert Image.open(png).size[0] > 100
    page = rep.write_html_report([{"title": "Ablation", "table": (["run", "x"], [["I", "1.0"]]), "text": "a < b"},
                                  {"title": "Scores", "image": png},
                                  {"title": "Examples", "gallery": examples}], tmp_path / "r.html", title="Demo")
    html = page.read_text()
    assert "<h1>Demo</h1>" in html and "a &lt; b" in html and "data:image/png;base64," in html
    assert html.count('class="card') == 4 and "&lt;mass&gt;" in html
    assert "| im" in rep.gallery_markdown(examples)
    saved = rep.save_gallery_images(examples, tmp_path / "report" / "examples")
    md = rep.gallery_markdown(saved, relative_to=tmp_path / "report")
    assert "](examples/vqa-rad_" in md and all(Path(e["file"]).is_file() for e in saved)


@pytest.mark.slow
def test_end_to_end_on_a_tiny_checkpoint(tmp_path):
    """A real LocalBackend on a saved tiny checkpoint (random weights), synthetic VQA-RAD-layout data."""
    from gmai.model import create_model, save_checkpoint

    model, processor = create_model("tiny", corpus=["Is there a mass? yes no left lung"] * 50)
    ckpt = save_checkpoint(model, processor, tmp_path / "ckpt")
    data = tmp_path / "vqa"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), (120, 80, 40)).save(data / "images" / "a.jpg")
    rows = [{"qid": i, "image_name": "a.jpg", "answer": "yes" if i % 2 else "left lung",
             "answer_type": "CLOSED" if i % 2 else "OPEN", "question": "Is there a mass?"} for i in range(5)]
    (data / "testset.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    args = ["eval", str(ckpt), "--bench", f"vqa-rad={data}", "--out", str(out), "--batch-size", "2",
            "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["benchmarks"]["vqa-rad"]["n_items"] == 5 and report["generation"]["temperature"] == 0.0
    first = [json.loads(x)["prediction"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    # deterministic: a second run in a fresh folder gives the same replies
    result = CliRunner().invoke(app, args[:5] + [str(tmp_path / "out2")] + args[6:])
    assert result.exit_code == 0, result.output
    second = [json.loads(x)["prediction"] for x in (tmp_path / "out2" / "predictions.jsonl").read_text().splitlines()]
    assert first == second


def test_markdown_sections_render_tables_and_escape_raw_html(tmp_path):
    text = "| model | acc |\n|---|---|\n| R1 | 0.3 |\n\n- note <b>x</b>\n"
    page = rep.write_html_report([{"title": "R1", "markdown": text}], tmp_path / "r.html").read_text()
    assert "<table>" in page and "<td>R1</td>" in page and "<li>note &lt;b&gt;x&lt;/b&gt;</li>" in page
    assert "<pre>" not in page
