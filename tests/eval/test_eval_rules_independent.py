"""Must show: scoring a fixed prediction file on VQA-RAD test gives, per rule, the numbers that an
independent implementation of the same rule reproduces exactly.

The minimal implementations below are written separately from ``gmai.eval.scoring`` (from the rule
descriptions in paper-notes section 3 and the scoring docstring), import nothing from it, and are
compared item by item and in aggregate with what ``gmai eval score`` writes to report.json.
"""

import json
import re
import string
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmai.cli import app

VQA_RAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "vqa-rad"
pytestmark = pytest.mark.skipif(not (VQA_RAD / "testset.json").is_file(), reason="shared VQA-RAD copy absent")

# --------------------------------------------------------------------------------------------
# The fixed prediction file: tricky reply templates, chosen per question by a fixed formula.
# --------------------------------------------------------------------------------------------

CLOSED_TEMPLATES = [
    "{g}", "{G}.", "No, there is no abnormality", "yes and no", "cannot be determined", "<answer>{g}</answer>",
    "\\boxed{{{o}}}", "The answer is {o}", "nodule", "Normal.", "Not present", "I don't know",
    "Yes, there is a mass", "yeah", "isnt it {g}", "There isn't any effusion", "{o}, definitely not {g}",
    "Answer: {g}", "(yes) no", "\\boxed{{\\text{{{g}}}}}",
]
OPEN_TEMPLATES = [
    "{a}", "The answer is: {a}", "{a}.", "The {a}", "It is probably {a} or something else", "{w}", "no", "two",
    "<answer>{a}</answer>", "\\boxed{{{a}}}", "x-ray", "{A}", "Final answer: {a}", "a {a}, (likely)",
]


def fixed_predictions():
    rows = json.loads((VQA_RAD / "testset.json").read_text())
    preds = []
    for i, row in enumerate(rows):
        gold = str(row["answer"]).strip()
        if gold.lower() in ("yes", "no"):
            g = gold.lower()
            text = CLOSED_TEMPLATES[(7 * i + 3) % len(CLOSED_TEMPLATES)].format(
                g=g, G=g.capitalize(), o="no" if g == "yes" else "yes")
        else:
            text = OPEN_TEMPLATES[(5 * i + 1) % len(OPEN_TEMPLATES)].format(a=gold, A=gold.upper(), w=gold.split()[0])
        preds.append({"qid": row["qid"], "prediction": text})
    return rows, preds


# --------------------------------------------------------------------------------------------
# Independent minimal implementations
# --------------------------------------------------------------------------------------------

def ind_lmms(pred, gold, answer_type):
    def norm(s):
        s = str(s).strip().lower()
        while True:  # drop "( ... )" groups, left to right
            i = s.find("(")
            j = s.find(")", i + 1) if i >= 0 else -1
            if i < 0 or j < 0:
                break
            s = s[:i] + " " + s[j + 1:]
        for ch in string.punctuation:
            s = s.replace(ch, " ")
        s = " ".join(s.split())
        s = "xray" if s in ("x ray", "xray") else s
        if s in ("yes", "yeah", "yep", "true"):
            return "yes"
        if s in ("no", "nope", "false"):
            return "no"
        return s
    return norm(pred) == norm(gold), answer_type


NUMBERS = dict(zip("none zero one two three four five six seven eight nine ten".split(),
                   "0 0 1 2 3 4 5 6 7 8 9 10".split()))
SOME_CONTRACTIONS = {"isnt": "isn't", "dont": "don't", "cant": "can't", "arent": "aren't", "wasnt": "wasn't"}


def ind_vqa_clean(s):
    s = s.lower()
    original = s
    comma_number = any(original[k].isdigit() and original[k + 1] == "," and original[k + 2].isdigit()
                       for k in range(len(original) - 2))
    for mark in ';/[]"{}()=+\\_-><@`,?!':
        s = s.replace(mark, "" if (comma_number or mark + " " in original or " " + mark in original) else " ")
    kept, removed = [], 0
    for k, ch in enumerate(s):  # periods not followed by a digit go, at most 32 of them
        if ch == "." and not (k + 1 < len(s) and s[k + 1].isdigit()) and removed < 32:
            removed += 1
            continue
        kept.append(ch)
    words = []
    for w in "".join(kept).split():
        w = NUMBERS.get(w, w)
        if w in ("a", "an", "the"):
            continue
        words.append(SOME_CONTRACTIONS.get(w, w))
    return " ".join(words).replace(",", "")


def ind_multimedeval(pred, gold, answer_type):
    g = ind_vqa_clean(str(gold).lower().strip())
    gs, ps = set(g.split()), set(ind_vqa_clean(pred).split())
    if g in ("yes", "no"):
        if g == "no":
            gs = {"no", "not"}
        return len(ps & gs) / len(gs) >= 0.4, "closed"
    return (len(ps & gs) / len(gs) if gs else 0) >= 0.75, "open"


def ind_medevalkit_extract(r):
    def last_boxed(t):
        k = t.rfind("\\boxed{")
        if k < 0:
            return None
        depth, start = 1, k + 7
        for e in range(start, len(t)):
            depth += {"{": 1, "}": -1}.get(t[e], 0)
            if depth == 0:
                return t[start:e].strip()
        return None

    def answer_blocks(t):
        found = re.findall(r"<answer>(.*?)</answer>", t, flags=re.S)
        return " ".join(found).strip() or t

    b = last_boxed(r)
    if b is not None:
        r = b
    elif "<answer>" in r:
        r = answer_blocks(r)
    r = r.lower().strip()
    if "boxed" in r:
        b = last_boxed(r)
        r = "None" if b is None else b
    elif "<answer>" in r:
        r = answer_blocks(r)
    for p in ["**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:",
              "final answer", "final answer is"]:
        if p in r:
            r = r.split(p)[-1]
    return r


def ind_medevalkit(pred, gold, answer_type):
    g = str(gold).lower().strip()
    r = ind_medevalkit_extract(pred)
    if g in ("yes", "no"):
        r = r.replace("\n", "").replace(".", "")
        return (("yes" in r) + ("no" in r) == 1) and g in r, "closed"
    return r == g, "open"


def ind_gmai(pred, gold, answer_type):
    def norm(s):
        s = str(s).lower().replace("n't", " not")
        s = "".join(" " if ch in string.punctuation else ch for ch in s)
        return [w for w in s.split() if w not in ("a", "an", "the")]

    def span(t):
        t = re.sub(r"<think>.*?(</think>|$)", " ", t, flags=re.S | re.I)
        tags = re.findall(r"<answer>(.*?)</answer>", t, flags=re.S | re.I)
        if tags:
            t = tags[-1].strip()
        elif "\\boxed{" in t:
            k = t.rfind("\\boxed{") + 7
            depth = 1
            for e in range(k, len(t)):
                depth += {"{": 1, "}": -1}.get(t[e], 0)
                if depth == 0:
                    t = re.sub(r"\\(text|textbf|mathrm)\{([^{}]*)\}", r"\2", t[k:e].strip())
                    break
        m = list(re.finditer(r"(final\s+answer|answer)\s*(\*\*)?\s*(is\b\s*:?|:|-)\s*", t, flags=re.I))
        if m and t[m[-1].end():].strip():
            t = t[m[-1].end():]
        return t.strip(" \t\r\n\"'`*_.,;:!?")

    s = span(pred)
    g = " ".join(norm(gold))
    if g in ("yes", "no"):
        low = s.lower()
        if re.search(r"\b(cannot|can not|unable to|impossible to|hard to|difficult to)\s+(be\s+)?(determine|determined|"
                     r"tell|say|assess|assessed|evaluate|evaluated|answer)|\b(not sure|unsure|uncertain|unclear|unknown|"
                     r"indeterminate|inconclusive|don't know|do not know)\b", low) or \
                re.search(r"\b(yes\s*(and|or|/)\s*no|no\s*(and|or|/)\s*yes)\b", low):
            return False, "closed"
        words = norm(s)
        said = None
        if words and words[0] in {"yes", "yeah", "yep", "yup", "true", "correct", "affirmative", "y"}:
            said = "yes"
        elif words and words[0] in {"no", "nope", "false", "incorrect", "negative", "n", "not", "none", "absent", "never"}:
            said = "no"
        else:
            for w in words:
                if w in {"no", "not", "nope", "none", "never", "without", "absent", "negative", "false", "cannot",
                         "neither", "nor"}:
                    said = "no"
                    break
                if w in {"yes", "yeah", "yep", "true", "correct", "present", "positive", "seen", "visible"}:
                    said = "yes"
                    break
        return said == g, "closed"
    return norm(s) == norm(gold), answer_type


INDEPENDENT = {"gmai@1": ind_gmai, "lmms-eval-exact@1": ind_lmms, "multimedeval@1": ind_multimedeval,
               "medevalkit@1": ind_medevalkit}


def test_fixed_prediction_file_scores_agree_with_independent_implementations(tmp_path):
    rows, preds = fixed_predictions()
    contraction_words = {w for p in preds for w in p["prediction"].lower().split()} & \
        {"couldnt", "didnt", "doesnt", "hadnt", "hasnt", "havent", "hes", "im", "ive", "thats", "theres", "wont"}
    assert not contraction_words  # the independent contraction table only covers what the file uses
    pred_file = tmp_path / "predictions.jsonl"
    pred_file.write_text("\n".join(json.dumps(p) for p in preds) + "\n")
    out = tmp_path / "out"
    args = ["eval", "score", str(pred_file), "--bench", f"vqa-rad={VQA_RAD}", "--out", str(out), "--no-baselines"]
    for rule in INDEPENDENT:
        args += ["--rules", rule]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())["benchmarks"]["vqa-rad"]
    suite_rows = {r["qid"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    by_qid = {str(p["qid"]): p["prediction"] for p in preds}
    closed_acc = {}
    for rule, fn in INDEPENDENT.items():
        verdicts = {}
        for row in rows:
            qid = str(row["qid"])
            ok, kind = fn(by_qid[qid], str(row["answer"]).strip(), row["answer_type"].lower())
            verdicts[qid] = (ok, kind)
            assert suite_rows[qid]["verdicts"][rule] == ok, (rule, qid, by_qid[qid], row["answer"])
            assert suite_rows[qid]["kinds"][rule] == kind, (rule, qid)
        summary = report["rules"][rule]
        assert summary["correct"] == sum(ok for ok, _ in verdicts.values())
        assert summary["accuracy"] == sum(ok for ok, _ in verdicts.values()) / len(rows)
        for kind in ("closed", "open"):
            mine = [ok for ok, k in verdicts.values() if k == kind]
            assert summary["by_type"][kind]["n"] == len(mine)
            assert summary["by_type"][kind]["accuracy"] == sum(mine) / len(mine)
        closed_acc[rule] = summary["by_type"]["closed"]["accuracy"]
    # the same replies, four different closed-question accuracies: the rule decides the number
    assert len({round(v, 6) for v in closed_acc.values()}) == 4
