"""The runner with a fake backend: batching, resume cache, failed images, reports, CLI routing."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmai.cli import app
from gmai.eval import runner
from gmai.eval.runner import BenchSpec, EvalOptions, run_eval
from gmai.infer import GenerationConfig


class FakeBackend:
    """Answers from the prompt text alone; records every generate call."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, requests, config=None, batch_size=16):
        self.calls.append(len(requests))
        assert all(len(r.images) == 1 and r.images[0].mode == "RGB" for r in requests)
        return ["Yes, there is." if r.prompt.startswith("Is") else "left lung" for r in requests]


def make_vqa_rad(root: Path, n: int = 10, missing_image_qids=()) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(root / "images" / "ok.jpg")
    rows = []
    for i in range(n):
        closed = i % 2 == 0
        rows.append({"qid": i, "image_name": "gone.jpg" if i in missing_image_qids else "ok.jpg",
                     "image_organ": "CHEST" if i < n // 2 else "HEAD", "answer": ("yes" if i % 4 == 0 else "no")
                     if closed else ("left lung" if i % 3 else "right lung"),
                     "answer_type": "CLOSED" if closed else "OPEN", "question_type": "PRES",
                     "question": "Is there a mass?" if closed else "Where is the mass?"})
    (root / "testset.json").write_text(json.dumps(rows))
    train = [dict(r, qid=100 + r["qid"]) for r in rows]
    (root / "trainset.json").write_text(json.dumps(train))
    return root


def test_run_writes_reports_batches_and_counts_failures(tmp_path):
    data = make_vqa_rad(tmp_path / "vqa", n=10, missing_image_qids={3})
    backend = FakeBackend()
    report = run_eval("fake-model", [BenchSpec("vqa-rad", str(data))], tmp_path / "out",
                      EvalOptions(batch_size=4), backend=backend)
    assert backend.calls == [3, 4, 2]  # batches of 4; qid 3 (first batch) has no image
    bench = report["benchmarks"]["vqa-rad"]
    assert bench["n_items"] == 10 and bench["n_failed"] == 1 and bench["n_scored"] == 9
    assert "gone.jpg" in bench["failures"][0]["error"]
    g = bench["rules"]["gmai@1"]
    # closed qids 0,2,4,6,8: golds yes,no,yes,no,yes -> "Yes, there is." right on 0,4,8
    assert g["by_type"]["closed"] == {"accuracy": 0.6, "correct": 3, "n": 5}
    # open qids 1,3,5,7,9: golds left,right(3: failed),left,left,right -> right on 1,5,7 (3 is failed)
    assert g["by_type"]["open"] == {"accuracy": 0.6, "correct": 3, "n": 5}
    assert g["accuracy"] == 0.6 and g["n"] == 10
    assert set(report["rules"]) == set(runner.DEFAULT_RULES)
    assert bench["breakdowns"]["organ"]["gmai@1"]["CHEST"]["n"] == 5
    assert set(bench["baselines"]) == {"majority", "question-only"}
    out = tmp_path / "out"
    for name in ("report.json", "report.md", "predictions.jsonl", "scores.csv", "breakdowns.csv"):
        assert (out / name).is_file()
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r["error"]]
    assert len(rows) == 10 and [r["qid"] for r in failed] == ["3"]
    assert all(v is False for v in failed[0]["verdicts"].values())
    md = (out / "report.md").read_text()
    assert "gmai@1" in md and "medevalkit@1" in md and "1 failed" in md


def test_interrupted_run_resumes_from_cache(tmp_path):
    data = make_vqa_rad(tmp_path / "vqa", n=6)

    class Crashing(FakeBackend):
        def generate(self, requests, config=None, batch_size=16):
            if self.calls:
                raise KeyboardInterrupt
            return super().generate(requests, config, batch_size)

    with pytest.raises(KeyboardInterrupt):
        run_eval("m", [BenchSpec("vqa-rad", str(data))], tmp_path / "out", EvalOptions(batch_size=4), backend=Crashing())
    backend = FakeBackend()
    report = run_eval("m", [BenchSpec("vqa-rad", str(data))], tmp_path / "out", EvalOptions(batch_size=4),
                      backend=backend)
    assert backend.calls == [2]  # only the 2 items after the first batch are generated again
    assert report["benchmarks"]["vqa-rad"]["n_items"] == 6
    with pytest.raises(ValueError, match="another model or decoding setup"):
        run_eval("m", [BenchSpec("vqa-rad", str(data))], tmp_path / "out", EvalOptions(batch_size=4),
                 config=GenerationConfig(max_new_tokens=5), backend=FakeBackend())


def test_limit_and_prompt_styles(tmp_path):
    data = make_vqa_rad(tmp_path / "vqa", n=10)
    backend = FakeBackend()
    report = run_eval("m", [BenchSpec("vqa-rad", str(data))], tmp_path / "out",
                      EvalOptions(limit=3, baselines=False), backend=backend)
    assert backend.calls == [3] and "baselines" not in report["benchmarks"]["vqa-rad"]
    from gmai.eval.benchmarks import BenchItem

    choice = BenchItem("1", "Which?", "B", "choice", options={"A": "x", "B": "y"})
    assert runner.build_prompt(choice) == "Which?\nA. x\nB. y"
    assert runner.build_prompt(choice, "short").endswith("letter from the given choices directly.")


def test_baselines_majority_and_question_only():
    from gmai.eval.benchmarks import BenchItem

    train = [BenchItem("t1", "Is the liver enlarged?", "yes", "closed"), BenchItem("t2", "Is there a fracture?", "no", "closed"),
             BenchItem("t3", "Is there free air?", "no", "closed"), BenchItem("t4", "Where is the lesion?", "left lobe", "open")]
    test = [BenchItem("q1", "Is the liver enlarged here?", "yes", "closed"), BenchItem("q2", "Where is it?", "x", "open")]
    assert runner.majority_baseline(train, test) == {"q1": "no", "q2": "left lobe"}
    assert runner.question_only_baseline(train, test) == {"q1": "yes", "q2": "left lobe"}


def test_bench_spec_parsing():
    assert BenchSpec.parse("vqa-rad=/d") == BenchSpec("vqa-rad", "/d", None)
    assert BenchSpec.parse("gmai-mmbench:val=/x=y") == BenchSpec("gmai-mmbench", "/x=y", "val")
    with pytest.raises(ValueError, match="NAME=PATH"):
        BenchSpec.parse("vqa-rad")
    with pytest.raises(KeyError, match="unknown benchmark"):
        BenchSpec.parse("nope=/d")


def test_cli_default_command_routes_model_to_run(tmp_path, monkeypatch):
    data = make_vqa_rad(tmp_path / "vqa", n=4)
    backend = FakeBackend()
    import gmai.infer

    monkeypatch.setattr(gmai.infer, "load_backend", lambda model, **kw: backend)
    result = CliRunner().invoke(app, ["eval", "some/ckpt", "--bench", f"vqa-rad={data}", "--out", str(tmp_path / "o"),
                                      "--batch-size", "2", "--rules", "gmai@1", "--rules", "multimedeval@1"])
    assert result.exit_code == 0, result.output
    assert backend.calls == [2, 2]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["model"] == "some/ckpt" and set(report["rules"]) == {"gmai@1", "multimedeval@1"}


def test_cli_errors_are_clear(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "no-model"), "--bench", f"vqa-rad={tmp_path}/none",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "benchmark folder not found" in result.output
    result = CliRunner().invoke(app, ["eval", "m", "--bench", "vqa-rad"])
    assert result.exit_code != 0 and "NAME=PATH" in result.output


def test_cli_score_and_compare(tmp_path):
    data = make_vqa_rad(tmp_path / "vqa", n=6)
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps({"qid": i, "prediction": "no"}) for i in range(5)) + "\n")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["eval", "score", str(preds), "--bench", f"vqa-rad={data}", "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs.append(str(out))
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    bench = report["benchmarks"]["vqa-rad"]
    assert bench["n_failed"] == 1 and bench["failures"][0]["error"] == "no prediction for this question"
    md = tmp_path / "cmp.md"
    result = CliRunner().invoke(app, ["eval", "compare", *runs, "--names", "I,I+II", "--markdown", str(md), "--by-type"])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "| I |" in text and "| I+II |" in text and "vqa-rad closed" in text and "gmai@1" in text


def write_omnimedvqa(root: Path) -> Path:
    """OmniMedVQA's release layout (QA_information/Open-access/<dataset>.json + Images/) with one row whose
    gt_answer matches no option."""
    from PIL import Image

    (root / "Images" / "D").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "Images" / "D" / "a.png")
    (root / "QA_information" / "Open-access").mkdir(parents=True)
    rows = [{"dataset": "D", "question_id": f"D_{i}", "question_type": "Disease Diagnosis", "question": "Finding?",
             "gt_answer": "Cataract" if i == 1 else "Normal", "image_path": "Images/D/a.png",
             "option_A": "Normal", "option_B": "Glaucoma", "modality_type": "Fundus Photography"} for i in range(3)]
    (root / "QA_information" / "Open-access" / "D.json").write_text(json.dumps(rows))
    return root


def test_unscorable_rows_are_reported_and_the_benchmark_goes_on(tmp_path):
    data = write_omnimedvqa(tmp_path / "omni")
    backend = FakeBackend()
    report = run_eval("fake", [BenchSpec("omnimedvqa", str(data))], tmp_path / "out",
                      EvalOptions(baselines=False), backend=backend)
    bench = report["benchmarks"]["omnimedvqa"]
    assert backend.calls == [2]  # the two scorable rows were asked
    assert bench["n_items"] == 3 and bench["n_failed"] == 1 and bench["n_unscorable"] == 1
    assert bench["failures"] == [{"qid": "D_1", "stage": "load",
                                  "error": "D.json: gt_answer 'Cataract' matches 0 of the options "
                                           "{'A': 'Normal', 'B': 'Glaucoma'}"}]
    assert bench["rules"]["gmai@1"]["n"] == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Failed items (1, 1 unscorable release rows left out of the accuracies" in md


def test_cli_prints_one_line_per_problem_and_never_a_traceback(tmp_path, monkeypatch):
    data = write_omnimedvqa(tmp_path / "omni")
    import gmai.infer

    monkeypatch.setattr(gmai.infer, "load_backend", lambda model, **kw: FakeBackend())
    result = CliRunner().invoke(app, ["eval", "m", "--bench", f"omnimedvqa={data}", "--out", str(tmp_path / "o"),
                                      "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "omnimedvqa: D_1: load failure: D.json: gt_answer 'Cataract' matches 0 of the options" in result.output

    def broken(*args, **kwargs):
        raise AttributeError("'list' object has no attribute 'items'")

    monkeypatch.setattr(gmai.infer, "load_backend", broken)  # any error type, raised anywhere in the run
    result = CliRunner().invoke(app, ["eval", "m", "--bench", f"omnimedvqa={data}", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["error: AttributeError: 'list' object has no attribute 'items'"]
    result = CliRunner().invoke(app, ["eval", "score", str(tmp_path / "o" / "predictions.jsonl"), "--bench",
                                      f"omnimedvqa:test={data}", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown split 'test'; this release has: Open-access, Restricted-access, all" in result.output


def test_cli_failure_lines_are_capped(capsys):
    from gmai.eval.cli import MAX_FAILURE_LINES, _print_failures

    _print_failures("b", [{"qid": str(i), "error": "e", "stage": "load"} for i in range(MAX_FAILURE_LINES + 5)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == MAX_FAILURE_LINES + 1 and lines[0] == "b: 0: load failure: e"
    assert lines[-1] == "b: ... and 5 more failures (all in report.json)"
