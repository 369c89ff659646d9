import json
from pathlib import Path

import pytest

from gmai.demo import DEFAULT_VQA_RAD, _find_vqa_rad


def test_demo_finds_vqa_rad_beside_the_repository_from_any_directory(monkeypatch, tmp_path):
    if not (DEFAULT_VQA_RAD / "testset.json").is_file():
        pytest.skip("../shared/data/vqa-rad is not present")
    monkeypatch.chdir(tmp_path)  # not the repository: discovery must not depend on the working directory
    assert _find_vqa_rad(None) == DEFAULT_VQA_RAD.resolve()


def test_demo_refuses_a_vqa_rad_path_without_the_json_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="testset.json"):
        _find_vqa_rad(str(tmp_path))
    assert Path(tmp_path).exists()


# ---------------------------------------------------------------------------------------------
# Step 5 (GMAI-VL-R1) resumes like the other steps: the heavy sub-steps are stood in for by fakes that write
# the same completion files the real ones write (questions-summary.json, synth-report.json, the trainer's
# DONE_FILE, grpo-summary.json), so the test runs in a second and checks only the resume logic.
# ---------------------------------------------------------------------------------------------

def _fake_r1_steps(monkeypatch, calls: list[str]):
    import gmai.rl.demo as r1
    from gmai.rl.questions import RL_FILE, SFT_POOL_FILE
    from gmai.rl.synth import SYNTH_REPORT
    from gmai.train.trainer import DONE_FILE

    def build_questions(data_dir, qdir, **kw):
        calls.append("questions")
        qdir.mkdir(parents=True, exist_ok=True)
        summary = {"questions": 2, "sft_questions": 2, "heldout": 0}
        (qdir / r1.QUESTIONS_SUMMARY).write_text(json.dumps(summary))
        return summary

    def synthesise(questions, teacher, out, cfg, show_progress=False):
        calls.append(f"synth:{Path(out).name}")
        report = {"questions": 2, "sft_rows": 2, "teacher_rows": 0, "template_rows": 2,
                  "by": {"all": {"all": {f"pass@{cfg.k}": 0.0, "format_rate": 0.0, "chains": 8,
                                         "acceptance_rate": 0.0}}}}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / SYNTH_REPORT).write_text(json.dumps(report))
        return report

    def run_sft(model, data, out, sft, seed, console):
        calls.append("sft")
        (Path(out) / "stage3").mkdir(parents=True)
        (Path(out) / "stage3" / DONE_FILE).write_text("{}")
        return Path(out) / "stage3"

    def train_grpo(model, questions, out, cfg):
        calls.append("grpo")
        summary = {"steps": 4, "final": str(Path(out) / "final"), "first": {}, "last": {}, "plots": [],
                   "vision": {}, "revisits": {}}
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / r1.GRPO_SUMMARY).write_text(json.dumps(summary))
        return summary

    def evaluate_checkpoint(path, splits, max_new_tokens, reasoning_prompt):
        calls.append("eval")
        return {"in": {"n": 4, "accuracy": 0.5, "format_valid": 1.0, "correct": [True, False, True, False]}}

    for name, fake in [("build_questions", build_questions), ("synthesise", synthesise), ("run_sft", run_sft),
                       ("train_grpo", train_grpo), ("evaluate_checkpoint", evaluate_checkpoint)]:
        monkeypatch.setattr(r1, name, fake)
    monkeypatch.setattr(r1, "eval_splits", lambda qdir, hold_out, limit, seed: {"in": ["q"] * 4})
    monkeypatch.setattr(r1, "read_metrics", lambda out: [])
    return r1, RL_FILE, SFT_POOL_FILE


def test_r1_step_resumes_and_restarts_when_its_settings_change(monkeypatch, tmp_path):
    calls: list[str] = []
    r1, *_ = _fake_r1_steps(monkeypatch, calls)
    out = tmp_path / "r1"
    first = r1.run_r1_demo(tmp_path / "stage3", tmp_path / "data", out, hold_out={})
    assert calls == ["questions", "synth:synth", "sft", "grpo", "synth:synth-round2", "eval", "eval", "eval"]
    assert (out / "r1-demo.md").is_file()

    calls.clear()  # a complete step is skipped as a whole
    assert r1.run_r1_demo(tmp_path / "stage3", tmp_path / "data", out, hold_out={})["table"] == first["table"]
    assert calls == []

    calls.clear()  # interrupted after SFT: questions, synthesis and SFT are not redone
    for done in (out / r1.SUMMARY_FILE, out / "grpo" / r1.GRPO_SUMMARY):
        done.unlink()
    r1.run_r1_demo(tmp_path / "stage3", tmp_path / "data", out, hold_out={})
    assert calls == ["grpo", "eval", "eval", "eval"]

    calls.clear()  # other settings: nothing made with the old ones is reused
    r1.run_r1_demo(tmp_path / "stage3", tmp_path / "data", out, hold_out={}, grpo_lr=3e-4)
    assert calls == ["questions", "synth:synth", "sft", "grpo", "synth:synth-round2", "eval", "eval", "eval"]


# ---------------------------------------------------------------------------------------------
# The report's paired test against the majority-answer baseline, on a real `run_eval` output
# (VQA-RAD JSON layout: testset.json / trainset.json with qid, image_name, answer, answer_type, question).
# ---------------------------------------------------------------------------------------------

def _vqa_rad(root: Path, n: int) -> tuple[Path, dict[str, str]]:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(root / "images" / "a.jpg")
    rows, gold = [], {}
    for i in range(n):
        closed = i % 2 == 0
        answer = ("yes" if i % 6 == 0 else "no") if closed else ("left lung" if i % 8 == 1 else "liver")
        question = f"Is there a mass number {i}?" if closed else f"Where is finding number {i}?"
        rows.append({"qid": i, "image_name": "a.jpg", "answer": answer, "answer_type": "CLOSED" if closed else "OPEN",
                     "question": question})
        gold[question] = answer
    (root / "testset.json").write_text(json.dumps(rows))
    (root / "trainset.json").write_text(json.dumps([dict(r, qid=1000 + r["qid"]) for r in rows]))
    return root, gold


class _Answers:
    name = "fixed"

    def __init__(self, answer):
        self.answer = answer

    def generate(self, requests, config=None, batch_size=16):
        return [self.answer(r.prompt) for r in requests]


def test_report_tests_the_model_against_the_majority_answer_on_every_rule(tmp_path):
    from gmai.eval.runner import BenchSpec, EvalOptions, run_eval
    from gmai.report import majority_paired_tests

    data, gold = _vqa_rad(tmp_path / "vqa", 40)
    question = lambda prompt: next(q for q in gold if q in prompt)  # noqa: E731
    oracle, parrot = _Answers(lambda p: gold[question(p)]), _Answers(lambda p: "no" if "Is there" in p else "liver")
    for name, backend in (("oracle", oracle), ("parrot", parrot)):
        run_eval(name, [BenchSpec("vqa-rad", str(data))], tmp_path / name, EvalOptions(batch_size=8), backend=backend)
    report = json.loads((tmp_path / "oracle" / "report.json").read_text())
    rules = list(report["benchmarks"]["vqa-rad"]["rules"])
    beats = majority_paired_tests(tmp_path / "oracle")
    assert [row[1] for row in beats] == rules and len(rules) >= 4
    # the majority answer is right on 'no' (13 closed) and 'liver' (15 open): 28 of 40; the oracle on all 40
    baseline = report["benchmarks"]["vqa-rad"]["baselines"]["majority"]["rules"]
    for label, rule, model, majority, diff, discordant, p, verdict in beats:
        assert (model, majority, discordant, verdict) == ("100.0", "70.0", "+12/-0", "beats majority"), rule
        assert majority == f"{100 * baseline[rule]['accuracy']:.1f}" and float(p) < 0.001
    # answering with the majority itself: no discordant question, p = 1, and the verdict says so
    same = majority_paired_tests(tmp_path / "parrot")
    assert {(row[5], row[6], row[7]) for row in same} == {("+0/-0", "1", "does NOT beat majority")}



def test_paired_majority_test_leaves_out_questions_a_rule_does_not_score(tmp_path):
    from gmai.eval.runner import BenchSpec, EvalOptions, run_eval
    from gmai.report import majority_paired_tests

    data, gold = _vqa_rad(tmp_path / "vqa", 40)
    question = lambda prompt: next(q for q in gold if q in prompt)  # noqa: E731
    run_eval("oracle", [BenchSpec("vqa-rad", str(data))], tmp_path / "oracle", EvalOptions(batch_size=8),
             backend=_Answers(lambda p: gold[question(p)]))
    preds = tmp_path / "oracle" / "predictions.jsonl"
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    rule = next(iter(rows[0]["verdicts"]))
    for row in rows[:30]:  # as an exact-match rule marks multiple-choice questions: not applicable
        row["verdicts"][rule] = None
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = {r[1]: r for r in majority_paired_tests(tmp_path / "oracle")}
    # 10 questions left: the oracle is right on all; the majority ('no' / 'liver') on those of them it gets
    left = [r for r in rows[30:]]
    majority_right = sum(r["answer"] in ("no", "liver") for r in left)
    assert table[rule][2:4] == ["100.0", f"{100 * majority_right / len(left):.1f}"]
    assert table[rule][5] == f"+{len(left) - majority_right}/-0"

# ---------------------------------------------------------------------------------------------
# A whole demo, shrunk (a few optimiser steps per stage, 8 questions per benchmark, a tiny R1 round):
# the report a user reads has every section and table, and a rerun redoes nothing.
# ---------------------------------------------------------------------------------------------

SMALL_TRAINING = [f"stages.{k}.{key}={value}" for k in range(4)
                  for key, value in (("max_steps", 2), ("per_device_batch_size", 4))]
SMALL_R1 = {"sft_questions": 16,  # enough chains for one batch of 4 packed rows
            "grpo_questions": 4, "sft_epochs": 1.0, "grpo_epochs": 1.0, "eval_limit": 8,
            "max_new_tokens": 16}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    from gmai.demo import run_demo

    root = tmp_path_factory.mktemp("demo")
    vqa, _ = _vqa_rad(root / "vqa-rad", 24)
    out = root / "out"
    run_demo(str(out), str(vqa), recipe_overrides=SMALL_TRAINING, eval_limit=8, r1_options=SMALL_R1)
    return out


def _sections(markdown: str) -> dict[str, str]:
    parts = markdown.split("\n## ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in parts}


def _table_header(body: str) -> list[str]:
    line = next(x for x in body.splitlines() if x.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_demo_report_has_every_section_and_table(small_demo):
    md = (small_demo / "report.md").read_text()
    sections = _sections(md)
    titles = list(sections)
    for expected in ("1. Data engine", "2. Three-stage training", "3. Stage ablation",
                     "4. gmai: every scoring rule", "4. vqa-rad: every scoring rule", "5. Examples",
                     "Does the Stage III model beat the majority answer?", "6. GMAI-VL-R1", "Timings"):
        assert any(t.startswith(expected) for t in titles), (expected, titles)
    training = sections[next(t for t in titles if t.startswith("2. "))]
    for run in ("train/stage0", "train/stage1", "train/stage2", "train/stage3", "train-I+III/stage3"):
        assert f"| {run} |" in training, run
    ablation = sections[next(t for t in titles if t.startswith("3. "))]
    assert _table_header(ablation)[0] == "run" and {"gmai", "vqa-rad"} <= set(_table_header(ablation))
    for name in ("I", "I+II", "I+III", "I+II+III"):
        assert f"| {name} |" in ablation, name
    rules = list(json.loads((small_demo / "eval" / "I+II+III" / "report.json").read_text())["rules"])
    for bench in ("gmai", "vqa-rad"):
        body = sections[f"4. {bench}: every scoring rule, model vs baselines (I+II+III)"]
        assert _table_header(body) == ["rule", "model", "majority", "question-only"]
        assert all(f"| {rule} |" in body for rule in rules)
    majority = sections["Does the Stage III model beat the majority answer? (I+II+III, paired)"]
    assert _table_header(majority)[:3] == ["benchmark", "rule", "model %"]
    assert all(f"| {b} | {r} |" in majority for b in ("gmai", "vqa-rad") for r in rules)
    r1 = sections["6. GMAI-VL-R1: rejection sampling, SFT, GRPO"]
    assert "| model |" in r1 and "| GRPO (R1) |" in r1 and "| Stage III (plain prompt) |" in r1
    assert "across 3 seeds" in r1 and "one seed's numbers" in r1  # the committed sweep's verdict, this run labelled
    html = (small_demo / "report.html").read_text()
    assert html.count("<table>") >= 7 and "GMAI-VL-R1" in html


@pytest.mark.slow
def test_demo_rerun_resumes_every_step(small_demo, tmp_path):
    from gmai.demo import run_demo

    made = [small_demo / "data" / "stats.json", small_demo / "train" / "stage3" / "model.safetensors",
            small_demo / "train-I+III" / "stage3" / "model.safetensors", small_demo / "r1" / "r1-demo.json",
            *sorted((small_demo / "eval").glob("*/cache/*.jsonl"))]
    before = {p: p.stat().st_mtime_ns for p in made}
    vqa = small_demo.parent / "vqa-rad"
    run_demo(str(small_demo), str(vqa), recipe_overrides=SMALL_TRAINING, eval_limit=8, r1_options=SMALL_R1)
    assert {p: p.stat().st_mtime_ns for p in made} == before


def test_majority_tests_skip_a_benchmark_with_nothing_scored(tmp_path):
    from gmai.report import majority_paired_tests

    bench = {"benchmark": "gmai", "path": str(tmp_path), "split": None, "rules": {"gmai@1": {}},
             "baselines": {"majority": {"rules": {}}}}
    (tmp_path / "report.json").write_text(json.dumps({"benchmarks": {"gmai": bench}}))
    (tmp_path / "predictions.jsonl").write_text("")
    assert majority_paired_tests(tmp_path) == []


@pytest.mark.slow
def test_demo_paired_majority_table_counts_the_questions_report_json_counts(small_demo):
    """The paired table's model and majority numbers are report.json's accuracies for every rule: a rule that
    does not apply to a question (an exact-match rule on multiple choice) leaves it out of both."""
    from gmai.report import majority_paired_tests

    run = small_demo / "eval" / "I+II+III"
    report = json.loads((run / "report.json").read_text())["benchmarks"]
    rows = majority_paired_tests(run)
    assert rows
    for label, rule, model, majority, *_ in rows:
        bench = report[label]
        assert model == f"{100 * bench['rules'][rule]['accuracy']:.1f}", (label, rule)
        assert majority == f"{100 * bench['baselines']['majority']['rules'][rule]['accuracy']:.1f}", (label, rule)
    assert any(report[label]["rules"][rule].get("not_applicable") for label, rule, *_ in rows)  # the case is there


@pytest.mark.slow
def test_demo_evaluates_with_the_short_answer_instruction_stage_iii_learnt(small_demo):
    """The README: Stage III learns LLaVA-1.5's short-answer convention and the evaluation asks with it."""
    report = json.loads((small_demo / "eval" / "I+II+III" / "report.json").read_text())
    assert report["prompt_style"] == "short"
    events = [json.loads(x) for x in (small_demo / "train" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    forms = [e for e in events if "short_answers" in json.dumps(e) and e.get("stage") == 3]
    assert forms, "Stage III reports no short-answer rows"
    # the fixture's VQA-RAD train answers are bare ('yes', 'liver'): they get the instruction as they are
    assert '"short answer (was already)"' in json.dumps(forms[0])


@pytest.mark.slow
def test_demo_stage_iii_merges_the_questions_on_one_image(small_demo):
    """The README: the questions on one image are merged into conversations of up to 4 questions."""
    readme = (small_demo / "train" / "stage3" / "README.md").read_text().splitlines()
    merged = json.loads(next(x for x in readme if x.startswith("- data: "))[len("- data: "):])["questions_per_image"]
    sizes = {int(k.split()[0]): n for k, n in merged.items()}
    assert max(sizes) <= 4 and any(size > 1 for size in sizes), merged


def test_report_points_a_missed_benchmark_to_where_the_longer_run_beats_majority(tmp_path):
    """The fallback of issue #16: what the demo's budget does not reach, the committed longer run shows."""
    from gmai.report import LONGER_RUN, longer_run_note

    table = [["gmai", "gmai@1", "41.0", "26.3", "+14.7", "+48/-25", "0.0095", "beats majority"],
             ["vqa-rad", "gmai@1", "29.3", "31.9", "-2.7", "+35/-47", "0.22", "does NOT beat majority"]]
    run = {"overrides": ["stages.3.epochs=4"], "crosses": {"gmai": "step-000354", "vqa-rad": "step-000826"},
           "rows": [{"checkpoint": "step-000826", "step": 826, "tokens": 1990209},
                    {"checkpoint": "stage3", "step": 940, "tokens": 2264806}]}
    (tmp_path / "longer.json").write_text(json.dumps(run))
    note = longer_run_note(table, tmp_path / "longer.json")
    assert note.startswith("Not beaten under every rule in this run: vqa-rad.")
    assert "vqa-rad from step 826 (1,990,209 Stage III tokens)" in note and "gmai from" not in note
    run["crosses"]["vqa-rad"] = "never (in this run)"
    (tmp_path / "longer.json").write_text(json.dumps(run))
    assert "vqa-rad never" in longer_run_note(table, tmp_path / "longer.json")
    assert "No longer run here" in longer_run_note(table, tmp_path / "missing.json")
    assert longer_run_note(table[:1], tmp_path / "longer.json") == ""  # everything beaten: nothing to add
    # the committed run is the one the note names, and it does cross on both benchmarks
    committed = json.loads(LONGER_RUN.read_text())
    assert all(c.startswith("step-") or c == "stage3" for c in committed["crosses"].values()), committed["crosses"]
