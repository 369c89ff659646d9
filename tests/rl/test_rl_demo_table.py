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


def _sweep(tmp_path, diffs_and_ps, config="default"):
    import json

    runs = [{"config": config, "seed": k, "held-out: GRPO - SFT": d, "held-out: p": p,
             "in-dist: GRPO - SFT": 0.0, "in-dist: p": 1.0} for k, (d, p) in enumerate(diffs_and_ps)]
    path = tmp_path / "r1_sweep.json"
    path.write_text(json.dumps({"source": "benchmarks/results/r1_sweep.md", "runs": runs}))
    return path


def test_cross_seed_notes_state_only_a_verdict_every_seed_shares(tmp_path):
    from gmai.rl.demo import cross_seed_notes

    # the two committed runs of the previous sessions: +0.109 (p=1e-4) on one machine, -0.094 (p=5e-4) on another
    mixed = " ".join(cross_seed_notes(_sweep(tmp_path, [(0.109, 1e-4), (-0.094, 5e-4), (0.01, 0.9)])))
    assert "held-out GRPO - SFT +0.008 +- 0.102 (sd), significantly better in 1 / worse in 1 of 3 seeds" in mixed
    assert "no consistent effect" in mixed and "beats its SFT start in every seed" not in mixed
    better = " ".join(cross_seed_notes(_sweep(tmp_path, [(0.1, 0.01), (0.2, 0.001), (0.15, 0.02)])))
    assert "held-out GRPO - SFT +0.150 +- 0.050 (sd)" in better and "GRPO beats its SFT start in every seed" in better
    assert "in-dist GRPO - SFT +0.000 +- 0.000 (sd), significantly better in 0 / worse in 0 of 3 seeds: no " \
           "consistent effect" in better
    assert "one seed's numbers" in better


def test_cross_seed_notes_without_a_sweep_say_the_lines_are_one_run(tmp_path):
    from gmai.rl.demo import cross_seed_notes

    assert "one run's numbers" in cross_seed_notes(tmp_path / "missing.json")[0]
    assert "one run's numbers" in cross_seed_notes(_sweep(tmp_path, [(0.1, 0.01)]))[0]  # a single seed is not a sweep
    assert "one run's numbers" in cross_seed_notes(_sweep(tmp_path, [(0.1, 0.01)] * 3, config="choice"))[0]


def test_the_committed_sweep_has_three_seeds_of_the_demo_setting():
    import json

    import pytest

    from gmai.rl.demo import SWEEP_FILE, cross_seed_notes

    if not SWEEP_FILE.is_file():
        pytest.skip("no benchmarks/ folder (installed package)")
    runs = [r for r in json.loads(SWEEP_FILE.read_text())["runs"] if r["config"] == "default"]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2]
    assert sum(note.startswith("across 3 seeds") for note in cross_seed_notes()) == 2


def test_cross_seed_notes_say_whether_the_sweep_started_from_this_stage3(tmp_path):
    import hashlib
    import json

    from gmai.rl.demo import cross_seed_notes

    sweep = _sweep(tmp_path, [(0.1, 0.01)] * 3)
    (tmp_path / "stage3").mkdir()
    (tmp_path / "stage3" / "model.safetensors").write_bytes(b"weights")
    summary = json.loads(sweep.read_text())
    summary["stage3_sha256"] = hashlib.sha256(b"weights").hexdigest()
    sweep.write_text(json.dumps(summary))
    assert "started from this run's Stage III" in cross_seed_notes(sweep, stage3_ckpt=tmp_path / "stage3")[-1]
    (tmp_path / "stage3" / "model.safetensors").write_bytes(b"retrained")
    assert "another Stage III model" in cross_seed_notes(sweep, stage3_ckpt=tmp_path / "stage3")[-1]
