"""Reports: run outputs (JSON, JSONL, Markdown, CSV), run comparison, plots, and an HTML page builder.

Reusable pieces for the demo's final report: :func:`comparison_table` / :func:`markdown_table` for the
stage ablation, :func:`scores_with_baselines` for VQA-RAD next to its baselines, :func:`plot_rule_scores`
for a bar chart, :func:`example_gallery` for a few images with question / answer / prediction, and
:func:`write_html_report` to put sections together in one self-contained HTML file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rule_rows(bench: dict[str, Any]) -> list[list[Any]]:
    """Rows ``rule, overall, closed, open, choice, n`` of one benchmark report (percent)."""
    rows = []
    for rule, s in bench["rules"].items():
        by = s["by_type"]
        rows.append([rule, fmt_pct(s["accuracy"]), *(fmt_pct(by[k]["accuracy"]) if k in by else "-"
                                                     for k in ("closed", "open", "choice")), s["n"]])
    return rows


def scores_with_baselines(bench: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows: per rule, the model's overall accuracy next to each baseline's (percent)."""
    baselines = {k: v for k, v in (bench.get("baselines") or {}).items() if isinstance(v, dict) and "rules" in v}
    headers = ["rule", "model", *baselines]
    rows = []
    for rule, s in bench["rules"].items():
        rows.append([rule, fmt_pct(s["accuracy"]),
                     *(fmt_pct(b["rules"].get(rule, {}).get("accuracy")) for b in baselines.values())])
    return headers, rows


def markdown_report(report: dict[str, Any]) -> str:
    created = (f"Created {report['created']}; prompt style `{report['prompt_style']}`; "
               f"image max side {report.get('image_max_side') or 'full'}; "
               f"generation {json.dumps(report.get('generation'))}.")
    parts = [f"# Evaluation: {report['model']}", "", created, "",
             "Scoring rules (a score means nothing without its rule):", ""]
    parts += [f"- `{name}`: {info['description']}" for name, info in report["rules"].items()]
    for label, bench in report["benchmarks"].items():
        heading = f"## {label} ({bench['split']}, {bench['n_items']} questions, {bench['n_failed']} failed)"
        parts += ["", heading, "",
                  markdown_table(["rule", "overall", "closed", "open", "choice", "n"], rule_rows(bench))]
        if bench.get("failures"):
            shown = bench["failures"][:5]
            unscorable = bench.get("n_unscorable", 0)
            note = "scored as wrong" if not unscorable else \
                f"{unscorable} unscorable release rows left out of the accuracies, the rest scored as wrong"
            parts += ["", f"Failed items ({bench['n_failed']}, {note}): "
                      + "; ".join(f"{f['qid']}: {f['error']}" for f in shown)
                      + (" ..." if bench["n_failed"] > len(shown) else "")]
        if bench.get("not_questions"):
            parts += ["", "Held-out rows that are not questions (not scored): "
                      + ", ".join(f"{k}: {v}" for k, v in bench["not_questions"].items())]
        if bench.get("unmatched_predictions"):
            parts += ["", f"Predictions whose qid is not in this benchmark (ignored): {bench['unmatched_predictions']}"]
        base = bench.get("baselines") or {}
        if any(isinstance(v, dict) and "rules" in v for v in base.values()):
            headers, rows = scores_with_baselines(bench)
            parts += ["", "Against baselines that see no image (same rules):", "", markdown_table(headers, rows)]
        elif base.get("skipped"):
            parts += ["", f"Baselines skipped: {base['skipped']}"]
        om = bench.get("open_metrics") or {}
        if om:
            keys = ["exact", "recall", "f1", "bleu1", "bleu2", "bleu3", "bleu4", "rougeL"]
            parts += ["", f"Open questions ({om['n']}), gmai extraction:", "",
                      markdown_table(keys, [[f"{om[k]:.3f}" for k in keys]])]
        for fld, per_rule in (bench.get("breakdowns") or {}).items():
            if fld == "answer_type":
                continue
            values = sorted({v for stats in per_rule.values() for v in stats})
            rows = [[rule, *(f"{fmt_pct(stats[v]['accuracy'])} ({stats[v]['n']})" for v in values)]
                    for rule, stats in per_rule.items()]
            parts += ["", f"By {fld}:", "", markdown_table(["rule", *values], rows)]
    return "\n".join(parts) + "\n"


def write_run_outputs(out: Path, report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """``report.json``, ``predictions.jsonl``, ``report.md``, ``scores.csv`` and ``breakdowns.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown_report(report), encoding="utf-8")
    with (out / "scores.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["benchmark", "rule", "question_type", "accuracy", "correct", "n"])
        for label, bench in report["benchmarks"].items():
            for rule, s in bench["rules"].items():
                w.writerow([label, rule, "all", s["accuracy"], s["correct"], s["n"]])
                for kind, k in s["by_type"].items():
                    w.writerow([label, rule, kind, k["accuracy"], k["correct"], k["n"]])
    with (out / "breakdowns.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["benchmark", "field", "value", "rule", "accuracy", "correct", "n"])
        for label, bench in report["benchmarks"].items():
            for fld, per_rule in (bench.get("breakdowns") or {}).items():
                for rule, stats in per_rule.items():
                    for value, s in stats.items():
                        w.writerow([label, fld, value, rule, s["accuracy"], s["correct"], s["n"]])


# ---------------------------------------------------------------------------------------------
# Comparing runs (the stage ablation)
# ---------------------------------------------------------------------------------------------


def load_run(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    file = p / "report.json" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no report.json (pass a `gmai eval` output folder or its report.json)")
    return json.loads(file.read_text(encoding="utf-8"))


def comparison_table(runs: Sequence[dict[str, Any]], names: Sequence[str] | None = None,
                     rule: str = "gmai@1", by_type: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per run, one column per benchmark (and per question type)."""
    names = list(names) if names else [r["model"] for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} names for {len(runs)} runs")
    columns: list[tuple[str, str | None]] = []
    for run in runs:
        for label, bench in run["benchmarks"].items():
            kinds = sorted(bench["rules"].get(rule, {}).get("by_type", {})) if by_type else []
            for col in [(label, None)] + [(label, k) for k in kinds]:
                if col not in columns:
                    columns.append(col)
    headers = ["run"] + [label if kind is None else f"{label} {kind}" for label, kind in columns]
    rows = []
    for name, run in zip(names, runs):
        row = [name]
        for label, kind in columns:
            s = run["benchmarks"].get(label, {}).get("rules", {}).get(rule)
            if s is None:
                row.append("-")
            elif kind is None:
                row.append(fmt_pct(s["accuracy"]))
            else:
                row.append(fmt_pct(s["by_type"].get(kind, {}).get("accuracy")))
        rows.append(row)
    return headers, rows


def rich_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""):
    from rich.table import Table

    table = Table(title=title or None)
    for i, h in enumerate(headers):
        table.add_column(str(h), justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


# ---------------------------------------------------------------------------------------------
# Plots, galleries, HTML
# ---------------------------------------------------------------------------------------------


def plot_rule_scores(bench: dict[str, Any], out_png: str | Path, title: str = "") -> Path:
    """Bar chart: per rule, the model's accuracy next to each baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headers, rows = scores_with_baselines(bench)
    series = headers[1:]
    rules = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(rules), 3.4))
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        values = [0.0 if r[1 + j] == "n/a" else float(r[1 + j]) for r in rows]
        ax.bar([i + j * width for i in range(len(rules))], values, width, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(rules))], rules, rotation=15, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or bench.get("benchmark", ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _thumbnail_data_uri(path: str, side: int = 192) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def example_gallery(predictions: Sequence[dict[str, Any]] | str | Path, n: int = 6, rule: str = "gmai@1",
                    seed: int = 0, benchmark: str | None = None) -> list[dict[str, Any]]:
    """A few examples (half right, half wrong under ``rule`` when possible): image path, thumbnail,
    question, gold answer, prediction, verdict. ``predictions`` is rows or a predictions.jsonl path."""
    import random

    if isinstance(predictions, (str, Path)):
        predictions = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines()
                       if line.strip()]
    rows = [r for r in predictions if (benchmark is None or r["benchmark"] == benchmark) and r.get("images")]
    rng = random.Random(seed)
    right = [r for r in rows if r["verdicts"].get(rule)]
    wrong = [r for r in rows if not r["verdicts"].get(rule)]
    rng.shuffle(right)
    rng.shuffle(wrong)
    picked = right[: n // 2] + wrong[: n - min(n // 2, len(right))]
    picked = (picked + right[n // 2:])[:n]
    return [{"image": r["images"][0], "thumbnail": _thumbnail_data_uri(r["images"][0]), "question": r["question"],
             "answer": r["answer"], "prediction": r["prediction"], "error": r.get("error"),
             "correct": r["verdicts"].get(rule), "rule": rule, "benchmark": r["benchmark"], "qid": r["qid"]}
            for r in picked]


def save_gallery_images(examples: Sequence[dict[str, Any]], folder: str | Path,
                        side: int = 256) -> list[dict[str, Any]]:
    """Write each example's image (longer side <= ``side``) as ``folder/<benchmark>_<qid>.jpg`` for a
    Markdown report; returns the examples with ``file`` set (None when the image cannot be read)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for e in examples:
        target = folder / f"{e['benchmark']}_{str(e['qid']).replace('/', '_').replace('#', '_')}.jpg"
        try:
            with Image.open(e["image"]) as im:
                im = im.convert("RGB")
                im.thumbnail((side, side))
                im.save(target, format="JPEG", quality=85)
        except (OSError, ValueError):
            target = None
        out.append({**e, "file": str(target) if target else None})
    return out


def gallery_markdown(examples: Sequence[dict[str, Any]], relative_to: str | Path | None = None) -> str:
    """A Markdown table of examples; images shown when :func:`save_gallery_images` wrote them (paths
    relative to ``relative_to``, the folder of the Markdown file)."""
    def image_cell(e: dict[str, Any]) -> str:
        if not e.get("file"):
            return Path(e["image"]).name
        path = Path(e["file"])
        if relative_to is not None:
            path = Path(os.path.relpath(path, relative_to))
        return f"![{Path(e['image']).name}]({path.as_posix()})"

    rows = [[image_cell(e),
             e["question"], e["answer"], e["prediction"] if e["error"] is None else f"(failed: {e['error']})",
             "right" if e["correct"] else "wrong"] for e in examples]
    return markdown_table(["image", "question", "answer", "prediction", examples[0]["rule"] if examples else "rule"],
                          rows)


def gallery_html(examples: Sequence[dict[str, Any]]) -> str:
    cards = []
    for e in examples:
        img = f'<img src="{e["thumbnail"]}" alt="{html.escape(Path(e["image"]).name)}">' if e["thumbnail"] else ""
        pred = html.escape(str(e["prediction"])) if e["error"] is None else f"failed: {html.escape(e['error'])}"
        cards.append(f'<div class="card {"right" if e["correct"] else "wrong"}">{img}'
                     f"<p><b>Q:</b> {html.escape(e['question'])}</p><p><b>Gold:</b> {html.escape(e['answer'])}</p>"
                     f"<p><b>Model:</b> {pred}</p><p class='verdict'>{'right' if e['correct'] else 'wrong'} "
                     f"({html.escape(e['rule'])})</p></div>")
    return '<div class="gallery">' + "".join(cards) + "</div>"


def table_html(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.gallery{display:flex;flex-wrap:wrap;gap:12px}
.card{width:220px;border:2px solid #ccc;border-radius:6px;padding:8px;font-size:13px}.card img{max-width:100%}
.card.right{border-color:#3a3}.card.wrong{border-color:#c33}.verdict{font-weight:bold}img.plot{max-width:100%}"""


def markdown_html(text: str) -> str:
    """Markdown (CommonMark + tables) -> HTML, with any raw HTML in the text escaped, not passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def write_html_report(sections: Sequence[dict[str, Any]], out: str | Path, title: str = "gmai report") -> Path:
    """One self-contained HTML file. Each section: ``{"title", and any of "text" (plain paragraphs),
    "markdown" (rendered, tables included; raw HTML in it is escaped), "table": (headers, rows), "image": png path (embedded),
    "gallery": example_gallery(...) output, "html": raw HTML}``."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.get('title', ''))}</h2>")
        if s.get("text"):
            body += [f"<p>{html.escape(p)}</p>" for p in str(s["text"]).split("\n\n")]
        if s.get("table"):
            body.append(table_html(*s["table"]))
        if s.get("image"):
            data = base64.b64encode(Path(s["image"]).read_bytes()).decode()
            alt = html.escape(s.get("title", ""))
            body.append(f'<img class="plot" src="data:image/png;base64,{data}" alt="{alt}">')
        if s.get("gallery"):
            body.append(gallery_html(s["gallery"]))
        if s.get("markdown"):
            body.append(markdown_html(s["markdown"]))
        if s.get("html"):
            body.append(s["html"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                   f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return out
