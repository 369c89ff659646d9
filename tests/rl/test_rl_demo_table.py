from gmai.rl.demo import R1_NAME, _markdown, _table, _verdicts, compare


def _result(correct):
    return {"n": len(correct), "accuracy": sum(correct) / len(correct), "format_valid": 1.0, "correct": correct}


def test_r1_is_compared_with_the_stronger_stage3_row_on_each_split():
    results = {
        "Stage III (plain prompt)": {"held": _result([True] * 4 + [False] * 16), "in": _result([False] * 20)},
        "Stage III": {"held": _result([False] * 20), "in": _result([True] * 2 + [False] * 18)},
        "SFT": {"held": _result([True] * 10 + [False] * 10), "in": _result([True] * 3 + [False] * 17)},
        R1_NAME: {"held": _result([True] * 16 + [False] * 4), "in": _result([True] * 3 + [False] * 17)},
    }
    comparisons = compare(results, "SFT")
    assert comparisons["held"]["grpo_vs_sft"]["b_only"] == 6 and comparisons["in"]["grpo_vs_sft"]["p_value"] == 1.0
    assert comparisons["held"]["baseline"] == "Stage III (plain prompt)"
    assert comparisons["in"]["baseline"] == "Stage III"
    held = comparisons["held"]["tests"][R1_NAME]
    assert (held["b_only"], held["a_only"]) == (12, 0) and held["p_value"] < 0.001
    verdicts = _verdicts(comparisons)
    assert any(v.startswith("held: GRPO (R1) beats Stage III (plain prompt)") for v in verdicts)
    assert any(v.startswith("in: GRPO (R1) does not significantly beat Stage III") for v in verdicts)
    rows = _table(results, comparisons)
    assert rows[0]["held vs Stage III"] == "baseline"
    assert rows[3]["held acc [95% CI]"].startswith("0.800 [0.58, 0.92]")
    assert "p=" in rows[3]["held vs Stage III"]
    assert any(v.startswith("held: GRPO vs its SFT start +0.300") for v in verdicts)
    assert "| GRPO (R1) |" in _markdown(rows, ["a note"])
