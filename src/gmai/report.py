"""The demo's final report: one Markdown and one self-contained HTML file from every step's outputs.

Built only from files the steps wrote (stats.json, metrics.jsonl, report.json, r1-demo.json), so
it can be regenerated without rerunning anything: ``python -m gmai.report OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gmai import BENCHMARK_RESULTS
from gmai.train.trainer import DONE_FILE
from gmai.eval.report import (comparison_table, example_gallery, fmt_pct, markdown_table, plot_rule_scores,
                              save_gallery_images, scores_with_baselines, write_html_report)

ABLATION_NAMES = ("I", "I+II", "I+III", "I+II+III")
HEADLINE_RULE = "gmai@1"


def _data_section(out: Path) -> dict[str, Any]:
    stats = json.loads((out / "data" / "stats.json").read_text())
    rows = [[k, v] for k, v in sorted(stats.get("samples_by_subset", {}).items())]
    text = (f"{stats.get('records_kept', '?')} records kept from {stats.get('inputs', '?')} inputs, "
            f"{stats.get('rejects', '?')} rejects (each with its reason in data/rejects.jsonl), "
            f"{stats.get('samples', '?')} training samples. Sources named synthetic-* are computer-generated "
            f"phantoms, not patient data; the others are real images shipped inside pip packages. "
            f"Leakage check against VQA-RAD's images: {stats.get('leakage', {}).get('excluded', 0)} excluded. "
            f"Full counts and plots: data/README.md.")
    vqa_stats = out / "data-vqa-rad" / "stats.json"
    if vqa_stats.is_file():
        vqa = json.loads(vqa_stats.read_text())
        text += (f"\n\nVQA-RAD's own training split was converted separately ({vqa.get('samples', '?')} samples, "
                 f"data-vqa-rad/) and used in Stage III, as the paper uses benchmark train splits. By the dataset's "
                 f"design its train and test questions share images; the default corpus above is leakage-checked.")
    section = {"title": "1. Data engine (GMAI-VL-5.5M recipe on the default corpus)", "text": text,
               "table": (["subset", "samples"], rows)}
    plots = sorted((out / "data" / "plots").glob("*.png"))
    if plots:
        section["image"] = str(plots[0])
    return section


def _training_section(out: Path) -> list[dict[str, Any]]:
    sections = []
    rows = []
    for run in ("train", "train-I+III"):
        for done in sorted((out / run).glob(f"stage*/{DONE_FILE}")):
            info = json.loads(done.read_text())
            params = info.get("params", {})
            rows.append([f"{run}/{done.parent.name}", info.get("name", ""), info.get("steps"),
                         f"{info.get('loss_first_avg', 0):.3f} -> {info.get('loss_last_avg', 0):.3f}",
                         "yes" if info.get("loss_fell") else "NO",
                         f"{params.get('trainable', {}).get('total', 0):,} / {params.get('all', {}).get('total', 0):,}", info.get("elapsed_s")])
    sections.append({"title": "2. Three-stage training (tiny preset, CPU)",
                     "text": "Stage 0 is a short text-only warm-up of the randomly initialised tiny LM on the corpus "
                             "text: it is NOT part of the paper, whose LM starts pretrained. Stages I-III follow "
                             "the paper's freeze plan (projector; projector + vision; everything). 'train-I+III' is "
                             "Stage III started from Stage I, for the ablation.",
                     "table": (["run/stage", "name", "steps", "loss (first -> last tenth of steps)", "loss fell",
                                "trainable / all params", "seconds"], rows)})
    for png in sorted((out / "train").glob("*.png")) + sorted((out / "train" / "plots").glob("*.png")):
        sections.append({"title": f"training curves: {png.stem}", "image": str(png)})
    return sections


def _eval_sections(out: Path) -> list[dict[str, Any]]:
    runs, names = [], []
    for name in ABLATION_NAMES:
        path = out / "eval" / name / "report.json"
        if path.is_file():
            runs.append(json.loads(path.read_text()))
            names.append(name)
    if not runs:
        return []
    headers, rows = comparison_table(runs, names, rule=HEADLINE_RULE, by_type=True)
    sections = [{"title": "3. Stage ablation (the paper's Table: I, I+II, I+III, I+II+III)",
                 "text": f"Accuracy (%) under scoring rule {HEADLINE_RULE} on the default corpus's held-out split "
                         "('gmai') and, when present, VQA-RAD test. Every rule's numbers are in eval/<run>/report.json.",
                 "table": (headers, rows)}]
    final = runs[-1]
    for label, bench in final["benchmarks"].items():
        bh, br = scores_with_baselines(bench)
        png = plot_rule_scores(bench, out / "report_files" / f"{label}-rules.png",
                               title=f"{label}: stage I+II+III vs baselines")
        sections.append({"title": f"4. {label}: every scoring rule, model vs baselines (I+II+III)",
                         "text": f"{bench['n_scored']} items scored, {bench['n_failed']} failed. The same replies give "
                                 "different numbers under different kits' rules: the rule decides the number.",
                         "table": (bh, br), "image": str(png)})
    predictions = out / "eval" / names[-1] / "predictions.jsonl"
    if predictions.is_file():
        gallery = example_gallery(predictions, n=6, rule=HEADLINE_RULE)
        sections.append({"title": "5. Examples (I+II+III)", "gallery": gallery})
        volume = volume_example(predictions, out / "report_files" / "examples")
        if volume:
            sections.append(volume)
    return sections


def volume_example(predictions: Path, folder: Path) -> dict[str, Any] | None:
    """A held-out question asked about several images (a volume read as slices): the slices side by side,
    the question, the gold answer and the prediction. None when no such question was evaluated."""
    from PIL import Image

    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if len(r.get("images") or []) > 1]
    if not rows:
        return None
    row = next((r for r in rows if r["verdicts"].get(HEADLINE_RULE)), rows[0])
    strip = []
    for path in row["images"]:
        with Image.open(path) as im:
            im = im.convert("L")
            im.thumbnail((192, 192))
            strip.append(im.copy())
    montage = Image.new("L", (sum(im.width for im in strip) + 4 * (len(strip) - 1), max(im.height for im in strip)))
    x = 0
    for im in strip:
        montage.paste(im, (x, 0))
        x += im.width + 4
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"volume_{str(row['qid']).replace('/', '_').replace('#', '_')}.jpg"
    montage.save(target, format="JPEG", quality=85)
    verdict = "right" if row["verdicts"].get(HEADLINE_RULE) else "wrong"
    return {"title": f"5b. A volume read as {len(strip)} slices (held-out, I+II+III)", "image": str(target),
            "text": f"{len(rows)} held-out questions were asked about a volume shown as a sequence of slices "
                    f"(one conversation, several images). This one: **Q:** {row['question']} **gold:** "
                    f"{row['answer']} **prediction:** {row['prediction']!r} ({verdict} under {HEADLINE_RULE})."}


def _verdicts_by_qid(rows: list[dict[str, Any]], rule: str) -> dict[str, bool | None]:
    """None where the rule does not apply to the question (e.g. an exact-match rule on multiple choice)."""
    return {str(r["qid"]): r["verdicts"].get(rule) for r in rows}


def majority_paired_tests(run_dir: Path) -> list[list[Any]]:
    """Per benchmark and scoring rule: the model against the majority-answer baseline on the same questions
    (exact McNemar). The baseline's per-question verdicts are recomputed with the runner's own functions from
    the benchmark's train split, so they are the ones behind report.json's baseline numbers."""
    from gmai.eval.benchmarks import load_benchmark
    from gmai.eval.runner import majority_baseline, score_items
    from gmai.eval.stats import mcnemar_exact

    report = json.loads((run_dir / "report.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines() if x.strip()]
    table = []
    for label, bench in report["benchmarks"].items():
        if "majority" not in (bench.get("baselines") or {}):
            continue
        mine = [r for r in rows if r["benchmark"] == bench["benchmark"]]
        if not mine:  # nothing scored on this benchmark: nothing to test
            continue
        test = {str(it.qid): it for it in load_benchmark(bench["benchmark"], bench["path"], split=bench["split"])}
        items = [test[str(r["qid"])] for r in mine]
        train = load_benchmark(bench["benchmark"], bench["path"], split="train")
        preds = majority_baseline(train, items)
        majority = score_items(items, {q: {"prediction": p, "error": None} for q, p in preds.items()}, bench["rules"])
        for rule in bench["rules"]:
            model_ok, base_ok = _verdicts_by_qid(mine, rule), _verdicts_by_qid(majority, rule)
            # the questions the rule scores, as report.json's accuracies count them
            qids = [q for q in model_ok if model_ok[q] is not None and base_ok.get(q) is not None]
            if not qids:
                continue
            t = mcnemar_exact([base_ok[q] for q in qids], [model_ok[q] for q in qids])
            beats = t["difference"] > 0 and t["p_value"] < 0.05
            table.append([label, rule, fmt_pct(sum(model_ok[q] for q in qids) / len(qids)),
                          fmt_pct(sum(base_ok[q] for q in qids) / len(qids)), f"{100 * t['difference']:+.1f}",
                          f"+{t['b_only']}/-{t['a_only']}", f"{t['p_value']:.2g}",
                          "beats majority" if beats else "does NOT beat majority"])
    return table


LONGER_RUN = BENCHMARK_RESULTS / "accuracy_vs_tokens_4epochs.json"


def longer_run_note(table: list[list[Any]], longer_run: Path = LONGER_RUN) -> str:
    """For the benchmarks this run does not beat under every rule: where the committed longer run of the tiny
    recipe (``benchmarks/accuracy_vs_tokens.py``) first beats the majority under every rule, if it does."""
    missed = sorted({row[0] for row in table if row[7] != "beats majority"})
    if not missed:
        return ""
    note = f"Not beaten under every rule in this run: {', '.join(missed)}."
    if not longer_run.is_file():
        return note + " (No longer run here: benchmarks/results/ is in the source repository.)"
    run = json.loads(longer_run.read_text())
    steps = {r["checkpoint"]: r for r in run["rows"]}
    found = []
    for bench in missed:
        first = steps.get(run["crosses"].get(bench, ""))
        found.append(f"{bench} from step {first['step']} ({first['tokens']:,} Stage III tokens)" if first
                     else f"{bench} never")
    last = run["rows"][-1]
    return (f"{note} A longer run of the tiny recipe from a demo's Stage II checkpoint ({', '.join(run['overrides'])}: "
            f"{last['step']} updates, {last['tokens']:,} tokens; benchmarks/results/{longer_run.stem}.md) beats the "
            f"majority under every rule: {'; '.join(found)}. The demo trains Stage III for one epoch, to fit its time "
            "budget.")


def _majority_section(out: Path) -> list[dict[str, Any]]:
    run_dir = out / "eval" / ABLATION_NAMES[-1]
    if not (run_dir / "predictions.jsonl").is_file():
        return []
    table = majority_paired_tests(run_dir)
    if not table:
        return []
    return [{"title": "Does the Stage III model beat the majority answer? (I+II+III, paired)",
             "text": "The majority-answer baseline answers every question with the most common train answer of its "
                     "type. Paired exact McNemar test on the same questions: questions only the model gets right / "
                     "only the baseline gets right, two-sided p. 'beats' needs a positive difference and p < 0.05. "
                     + longer_run_note(table),
             "table": (["benchmark", "rule", "model %", "majority %", "difference (points)", "discordant", "p",
                        "verdict"], table)}]


def _r1_section(out: Path) -> list[dict[str, Any]]:
    summary_md = out / "r1" / "r1-demo.md"
    if not summary_md.is_file():
        return []
    sections = [{"title": "6. GMAI-VL-R1: rejection sampling, SFT, GRPO", "markdown": summary_md.read_text()}]
    for png in sorted((out / "r1").glob("*/*-metrics.png")):
        sections.append({"title": f"R1: {png.parent.name}/{png.stem}", "image": str(png)})
    return sections


def _markdown(sections: list[dict[str, Any]], out: Path, title: str) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s['title']}", ""]
        if s.get("text"):
            lines += [s["text"], ""]
        if s.get("table"):
            lines += [markdown_table(*s["table"]), ""]
        if s.get("image"):
            lines += [f"![{s['title']}]({Path(s['image']).resolve().relative_to(out.resolve())})", ""]
        if s.get("gallery"):
            saved = save_gallery_images(s["gallery"], out / "report_files" / "examples")
            for e in saved:
                verdict = "right" if e["correct"] else "wrong"
                image = f"![]({Path(e['file']).relative_to(out)})" if e.get("file") else "(image unreadable)"
                lines += [f"- {image} **Q:** {e['question']} **gold:** {e['answer']} **prediction:** "
                          f"{e['prediction']!r} ({verdict})"]
            lines.append("")
        if s.get("markdown"):
            lines += [s["markdown"], ""]
    return "\n".join(lines)


def write_demo_report(results: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    title = "gmai demo report: GMAI-VL + GMAI-VL-R1 on the embedded default (tiny model, CPU)"
    timing_rows = [[k, v] for k, v in (results.get("timings") or {}).items()]
    sections = [_data_section(out), *_training_section(out), *_eval_sections(out), *_majority_section(out),
                *_r1_section(out)]
    if timing_rows:
        sections.append({"title": "Timings", "table": (["step", "seconds"], timing_rows)})
    (out / "report.md").write_text(_markdown(sections, out, title), encoding="utf-8")
    write_html_report(sections, out / "report.html", title=title)
    return out / "report.md"


if __name__ == "__main__":
    print(write_demo_report({}, sys.argv[1] if len(sys.argv) > 1 else "demo-out"))
