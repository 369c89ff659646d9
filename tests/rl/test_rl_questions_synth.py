"""Questions from data-engine output and VQA-RAD; rejection sampling with a fake teacher."""

import json
from pathlib import Path

import pytest

from gmai.rl import questions as Q
from gmai.rl import synth as S
from gmai.rl.rewards import format_valid, is_correct
from gmai.train.fixtures import write_synthetic_corpus

VQA_RAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "vqa-rad"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=16, seed=1)


def _add_labels(corpus: Path) -> None:
    """Give the synthetic corpus classification metadata, as a data-engine cls source would."""
    path = corpus / "MM-Caption.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["labels"] = ["round lesion" if "round" in row["conversations"][1]["value"] else "square lesion"]
        row["label_set"] = ["round lesion", "square lesion", "no lesion"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_questions_from_data_engine_output(corpus, tmp_path):
    _add_labels(corpus)
    summary = Q.build_questions(corpus, tmp_path, hold_out={"modality": ["fundus"]}, seed=3)
    rl = [json.loads(line) for line in (tmp_path / Q.RL_FILE).read_text().splitlines()]
    sft = [json.loads(line) for line in (tmp_path / Q.SFT_FILE).read_text().splitlines()]
    held = [json.loads(line) for line in (tmp_path / Q.HELDOUT_FILE).read_text().splitlines()]
    assert len(rl) == len(sft) == summary["questions"] > 0
    assert {r["answer_type"] for r in rl} >= {"choice", "closed", "open", "box"}
    assert all(r["modality"] != "fundus" and r["split"] == "train" for r in rl)
    assert all(r["modality"] == "fundus" or r["split"] != "train" for r in held)
    for row in rl + sft:
        assert (tmp_path / row["image"]).exists()  # relative to the file's folder, as the trainer reads it
        assert row["conversations"][0]["value"].startswith("<image>\n")
    for row in rl:
        if row["answer_type"] == "choice":
            assert row["answer"] in "ABCD" and len(set(row["options"])) == len(row["options"]) >= 2
            assert row["conversations"][1]["value"] == row["answer"]
    # the SFT variant's template chains are valid and correct by the same rules the rewards use
    for row in sft:
        reply = row["conversations"][1]["value"]
        assert row["chain_source"] == "template"
        assert format_valid(reply) and is_correct(reply, row), reply
    presence = [r for r in rl if r["question_type"] == "presence"]
    assert {r["answer"] for r in presence} <= {"yes", "no"}


def test_sft_questions_are_disjoint_from_the_grpo_questions(corpus, tmp_path):
    _add_labels(corpus)
    together = Q.build_questions(corpus, tmp_path / "same", seed=3)
    summary = Q.build_questions(corpus, tmp_path / "split", seed=3, sft_questions=5)
    read = lambda name: [json.loads(line) for line in (tmp_path / "split" / name).read_text().splitlines()]  # noqa: E731
    rl, pool, sft = read(Q.RL_FILE), read(Q.SFT_POOL_FILE), read(Q.SFT_FILE)
    assert len(pool) == len(sft) == summary["sft_questions"] == 5
    assert len(rl) == summary["questions"] == together["questions"] - 5
    assert {r["id"] for r in pool} == {r["id"] for r in sft}
    assert not {r["id"] for r in pool} & {r["id"] for r in rl}
    same_pool = [json.loads(line)["id"] for line in (tmp_path / "same" / Q.SFT_POOL_FILE).read_text().splitlines()]
    assert same_pool == [json.loads(line)["id"] for line in (tmp_path / "same" / Q.RL_FILE).read_text().splitlines()]
    with pytest.raises(ValueError, match="leaves no GRPO questions"):
        Q.build_questions(corpus, tmp_path / "bad", seed=3, sft_questions=together["questions"])


def test_grpo_questions_restricted_to_rl_kinds_sft_keeps_all(corpus, tmp_path):
    Q.build_questions(corpus, tmp_path / "mc", seed=3, kinds=("choice", "closed", "open"), sft_questions=6,
                      rl_kinds=("choice",), max_questions=12)
    read = lambda name: [json.loads(line) for line in (tmp_path / "mc" / name).read_text().splitlines()]  # noqa: E731
    rl, pool = read(Q.RL_FILE), read(Q.SFT_POOL_FILE)
    assert len(pool) == 6 and 0 < len(rl) <= 6
    assert {r["answer_type"] for r in rl} == {"choice"}
    assert not {r["id"] for r in pool} & {r["id"] for r in rl}
    with pytest.raises(ValueError, match="leaves no GRPO questions"):
        Q.build_questions(corpus, tmp_path / "none", seed=3, kinds=("closed",), sft_questions=2, rl_kinds=("choice",))


def test_questions_bad_input_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data-engine output"):
        Q.build_questions(tmp_path, tmp_path / "out")
    (tmp_path / "MM-Instruct.jsonl").write_text('{"image": "images/missing.png", "conversations": []}\n')
    with pytest.raises(FileNotFoundError, match="MM-Instruct.jsonl:1"):
        Q.build_questions(tmp_path, tmp_path / "out")


@pytest.mark.skipif(not (VQA_RAD / "trainset.json").exists(), reason="VQA-RAD not present")
def test_questions_from_vqa_rad_train_split(tmp_path):
    summary = Q.build_questions(VQA_RAD, tmp_path, max_questions=50)
    rows = [json.loads(line) for line in (tmp_path / Q.RL_FILE).read_text().splitlines()]
    assert summary["questions"] == 50 and {r["source"] for r in rows} == {"vqa-rad"}
    assert {r["answer_type"] for r in rows} <= {"open", "closed"}
    assert (tmp_path / rows[0]["image"]).resolve().is_relative_to(VQA_RAD.resolve())  # linked, never copied


class FakeTeacher:
    """Answers every question with: a right chain, a near-duplicate of it, a wrong chain, a
    chain with broken format, and a second right chain worded differently."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def generate(self, requests, config=None, batch_size=16):
        self.calls.append((len(requests), config.num_return_sequences))
        out = []
        for r in requests:
            gold = r.prompt.split("GOLD=")[1].split("\n")[0] if "GOLD=" in r.prompt else "?"
            out.append([f"<think>I look at the image and the lesion is bright and round here.</think><answer>{gold}</answer>",
                        f"<think>I look at the image and the lesion is bright and round here!</think><answer>{gold}</answer>",
                        "<think>guess</think><answer>zzz</answer>",
                        f"{gold}",
                        f"<think>Different reasoning: the modality and the finding point one way.</think><answer>{gold}</answer>"])
        return out


def test_synth_keeps_valid_correct_distinct_chains(corpus, tmp_path):
    _add_labels(corpus)
    Q.build_questions(corpus, tmp_path / "q", seed=0)
    # Let the fake teacher see the gold answer for all but the first question.
    path = tmp_path / "q" / Q.RL_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        if i > 0:
            row["question"] += f"\nGOLD={row['answer']}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = FakeTeacher()
    config = S.SynthConfig(k=5, max_per_question=2, batch_size=4, template_fallback=True)
    report = S.synthesise(path, teacher, tmp_path / "s", config, show_progress=False)
    assert teacher.calls[0] == (4, 5)
    out = [json.loads(line) for line in (tmp_path / "s" / Q.SFT_FILE).read_text().splitlines()]
    teacher_rows = [r for r in out if r["chain_source"] == "teacher:fake"]
    assert len(teacher_rows) == 2 * (len(rows) - 1)  # the duplicate, the wrong one and the bare one are dropped
    assert all(format_valid(r["conversations"][1]["value"]) for r in teacher_rows)
    assert report["unsolved"] == [rows[0]["id"]]
    assert report["template_rows"] == 1  # the unsolved question gets the flagged template chain
    overall = report["by"]["all"]["all"]
    assert overall["acceptance_rate"] == pytest.approx(3 * (len(rows) - 1) / (5 * len(rows)))
    assert overall["pass@5"] == pytest.approx((len(rows) - 1) / len(rows))
    assert set(report["by"]["answer_type"]) >= {"choice", "closed", "open", "box"}
    unsolved = (tmp_path / "s" / S.UNSOLVED_FILE).read_text().splitlines()
    assert len(unsolved) == 1


def test_near_duplicate_detection():
    a = S.shingles("the lesion is round and bright in the left upper region")
    b = S.shingles("the lesion is round and bright in the left upper region .")
    c = S.shingles("a square dark area sits centrally with sharp edges")
    assert S.jaccard(a, b) > 0.8 > S.jaccard(a, c)


def test_grounding_answers_are_not_open_text_questions(tmp_path):
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.new("L", (32, 32), 128).save(tmp_path / "images" / "a.png")
    rows = [{"image": "images/a.png", "modality": "X-ray", "split": "train", "source": "s", "answer_type": "open",
             "answer": answer, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                                 {"from": "gpt", "value": answer}]}
            for question, answer in [("Find the mass.", "<box>[[0.1,0.2,0.3,0.4]]</box>"), ("Count the masses.", "1")]]
    (tmp_path / "MM-Instruct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [facts] = Q.collect(tmp_path)
    assert [qa["question"] for qa in facts.qa] == ["Count the masses."]


def test_questions_cli_rl_kinds(corpus, tmp_path):
    from typer.testing import CliRunner

    from gmai.cli import app

    result = CliRunner().invoke(app, ["rl", "questions", str(corpus), "--out", str(tmp_path), "--sft-questions", "4",
                                      "--kinds", "choice,closed", "--rl-kinds", "choice", "--seed", "1"])
    assert result.exit_code == 0, result.output
    rl = [json.loads(line) for line in (tmp_path / Q.RL_FILE).read_text().splitlines()]
    assert rl and {r["answer_type"] for r in rl} == {"choice"}


def test_recipe_questions_section_builds_with_rl_kinds(corpus, tmp_path):
    from gmai.rl.pipeline import QuestionsSection

    summary = QuestionsSection(input=str(corpus), kinds=["choice", "closed"], rl_kinds=["choice"], sft_questions=4,
                               seed=2).build(tmp_path)
    assert set(summary["by_type"]) == {"choice"} and summary["sft_questions"] == 4
    with pytest.raises(ValueError, match="questions.input"):
        QuestionsSection().build(tmp_path / "none")
