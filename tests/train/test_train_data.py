import json
from collections import Counter

import pytest

from gmai.train.config import DataArgs, GroupRule
from gmai.train.data import DataError, load_samples, quality_filter, sample_mixture
from gmai.train.fixtures import write_synthetic_corpus

RULES = [GroupRule(group="text_dialogue", has_image=False), GroupRule(group="report", id_contains=["#report#"]),
         GroupRule(group="core_med_caption", subset=["MM-Caption"]),
         GroupRule(group="other_med_instruction", source=["vqa-rad"])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=40, heldout_fraction=0.2)


def test_heldout_splits_are_excluded_and_counted(corpus):
    samples, counts = load_samples(corpus, DataArgs(groups=RULES, default_group="core_med_instruction"))
    lines = [json.loads(x) for f in corpus.glob("*.jsonl") for x in f.read_text().splitlines()]
    heldout = sum(1 for x in lines if x.get("split") not in (None, "train"))
    assert heldout > 0
    assert counts["held out (split=test)"] == heldout
    assert len(samples) == len(lines) - heldout
    assert all(s.meta.get("split", "train") == "train" for s in samples)
    groups = {s.group for s in samples}
    assert groups == {"text_dialogue", "report", "core_med_caption", "core_med_instruction"}
    text_only = [s for s in samples if s.image is None]
    assert text_only and all(s.group == "text_dialogue" for s in text_only)
    assert all("<image>" not in m["content"] for s in samples for m in s.messages)


def test_mixture_takes_the_configured_fraction_deterministically(corpus):
    samples, _ = load_samples(corpus, DataArgs(groups=RULES))
    n_caption = sum(s.group == "core_med_caption" for s in samples)
    chosen, report = sample_mixture(samples, {"core_med_caption": 0.5, "report": 2.0}, seed=1)
    again, _ = sample_mixture(samples, {"core_med_caption": 0.5, "report": 2.0}, seed=1)
    assert [s.id for s in chosen] == [s.id for s in again]
    assert report["core_med_caption"]["used"] == round(0.5 * n_caption)
    assert report["report"]["used"] == 2 * report["report"]["available"]
    assert not any(s.group == "text_dialogue" for s in chosen)  # absent from the mixture = not used


def test_quality_filter_drops_short_captions_and_low_confidence_with_counts(corpus):
    samples, _ = load_samples(corpus, DataArgs(groups=RULES))
    low = next(s for s in samples if s.subset == "MM-Instruct")
    low.meta["confidence"] = 0.1
    short_answer = next(s for s in samples if s.subset == "MM-Percept")
    short_answer.messages[-1]["content"] = "Yes."  # a short answer is not a short caption: kept
    kept, dropped = quality_filter(samples, DataArgs(min_caption_words=3, min_confidence=0.5))
    short = [s for s in samples if s.subset == "MM-Caption" and len(s.assistant_texts()[0].split()) < 3]
    assert short and dropped["caption shorter than 3 words"] == len(short)
    assert dropped["label confidence below 0.5"] == 1 and low not in kept
    assert short_answer in kept
    assert sum(dropped.values()) + len(kept) == len(samples)


def test_bad_input_names_the_file_and_line(tmp_path):
    (tmp_path / "MM-Caption.jsonl").write_text('{"id": "a", "conversations": [{"from": "gpt", "value": "x y z"}]}\n'
                                               "{not json\n")
    with pytest.raises(DataError, match=r"MM-Caption.jsonl:2: not valid JSON"):
        load_samples(tmp_path, DataArgs(subsets=["MM-Caption"]))
    (tmp_path / "MM-Caption.jsonl").write_text(json.dumps({"id": "a", "image": "images/nope.png", "conversations": [
        {"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]}) + "\n")
    with pytest.raises(DataError, match=r"MM-Caption.jsonl:1: image file .*nope.png.* does not exist"):
        load_samples(tmp_path, DataArgs(subsets=["MM-Caption"]))
    (tmp_path / "MM-Caption.jsonl").write_text(json.dumps({"id": "a", "conversations": [
        {"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]}) + "\n")
    with pytest.raises(DataError, match="has no 'image'"):
        load_samples(tmp_path, DataArgs(subsets=["MM-Caption"]))
    with pytest.raises(DataError, match="does not exist"):
        load_samples(tmp_path / "nowhere", DataArgs())


# Rows as `gmai data build` writes them (copied from a demo build: data/MM-Instruct.jsonl, data-vqa-rad/).
_QA_ROWS = [
    {"id": "2d#cls#ct#synthetic-lesion-cls#1", "image": "images/a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhich category does this image belong to?"},
        {"from": "gpt", "value": "The image shows calcification."}],
     "subset": "MM-Instruct", "source": "synthetic-lesion-cls", "format": "qa_open", "answer_type": "open",
     "answer": "calcification", "options": []},
    {"id": "2d#cls#ct#synthetic-lesion-cls#2", "image": "images/a.png", "conversations": [
        {"from": "human", "value": "<image>\nSelect the correct finding for this image.\nA. calcification\n"
                                   "B. cyst\nAnswer with the option's letter from the given choices."},
        {"from": "gpt", "value": "B. cyst"}],
     "subset": "MM-Instruct", "source": "synthetic-lesion-cls", "format": "qa_choice", "answer_type": "choice",
     "answer": "B", "options": ["A. calcification", "B. cyst"]},
    {"id": "2d#vqa#radiology#vqa-rad#2", "image": "images/a.png", "conversations": [
        {"from": "human", "value": "<image>\nIs the heart enlarged?"}, {"from": "gpt", "value": "No"}],
     "subset": "MM-Instruct", "source": "vqa-rad", "format": "vqa", "answer_type": "closed", "answer": "No",
     "options": []},
    {"id": "2d#cls#ct#synthetic-lesion-cls#3", "image": "images/a.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe this image."},
        {"from": "gpt", "value": "A CT scan showing cyst."}], "subset": "MM-Instruct", "format": "caption"},
]


def _qa_build(root):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "a.png")
    lines = "".join(json.dumps(r) + "\n" for r in _QA_ROWS)
    (root / "MM-Instruct.jsonl").write_text(lines)
    (root / "heldout" / "test").mkdir(parents=True)
    heldout = lines.replace('"id": "2d', '"split": "test", "id": "2d')
    (root / "heldout" / "test" / "MM-Instruct.jsonl").write_text(heldout)
    return root


def test_short_answer_form_asks_exactly_what_the_evaluator_asks_and_answers_with_the_gold(tmp_path):
    from gmai.eval.benchmarks.gmai_heldout import load as load_heldout
    from gmai.eval.runner import build_prompt
    from gmai.train.data import short_answer_form

    root = _qa_build(tmp_path)
    samples, _ = load_samples(root, DataArgs(subsets=["MM-Instruct"]))
    short, counts = short_answer_form(samples, share=1.0, seed=0)
    asked = {q.qid: build_prompt(q, "short") for q in load_heldout(root, split="test")}
    for sample, row in zip(short[:3], _QA_ROWS):
        assert sample.messages == [{"role": "user", "content": asked[row["id"]]},
                                   {"role": "assistant", "content": row["answer"]}]
    assert short[0].messages[0]["content"].endswith("\nAnswer the question using a single word or phrase.")
    assert short[1].messages[0]["content"].endswith("Answer with the option's letter from the given choices directly.")
    assert short[3].messages == samples[3].messages  # a caption is no question: untouched
    assert counts == {"short answer (rewritten)": 2, "short answer (was already)": 1}
    # share 0: the sentence replies stay as they were, without the instruction; an answer that is already
    # bare (VQA-RAD's own) still gets it, so the instruction always means "bare answer"
    kept, counts = short_answer_form(samples, share=0.0, seed=0)
    assert [s.messages for s in kept[:2]] == [s.messages for s in samples[:2]]
    assert kept[2].messages[0]["content"].endswith("single word or phrase.")
    assert counts == {"sentence reply kept": 2, "short answer (was already)": 1}


def _qa(sid: str, image: str, group: str = "other_med_instruction", turns: int = 1):
    from pathlib import Path

    from gmai.train.data import Sample

    messages = [m for i in range(turns) for m in ({"role": "user", "content": f"{sid} q{i}?"},
                                                   {"role": "assistant", "content": f"{sid} a{i}"})]
    return Sample(sid, "MM-Instruct", messages, Path(image), group, {"answer": f"{sid} a0"})


def test_questions_per_image_merges_an_images_questions_and_keeps_every_one():
    """LLaVA-1.5's merging: one conversation per image (up to N questions), every question kept exactly as
    often as the mixture took it, copies in different conversations; other samples untouched."""
    from gmai.train.data import questions_per_image

    a = [_qa(f"a{i}", "/img/a.png") for i in range(5)]
    b = [_qa("b0", "/img/b.png"), _qa("b1", "/img/b.png", group="core_med_instruction")]  # other group: apart
    caption, two_turns = _qa("cap", "/img/a.png", group="core_med_caption"), _qa("mt", "/img/a.png", turns=2)
    caption.messages = caption.messages[1:]  # assistant only
    samples = a * 2 + b + [caption, two_turns]  # the mixture took group a's questions twice
    merged, counts = questions_per_image(samples, max_turns=3, seed=0)

    asked = Counter(m["content"] for s in merged for m in s.messages if m["role"] == "user")
    assert asked == Counter(m["content"] for s in samples for m in s.messages if m["role"] == "user")
    on_a = [s for s in merged if s.image.name == "a.png" and s.group == "other_med_instruction" and s.id != "mt"]
    assert sorted(len(s.messages) // 2 for s in on_a) == [1, 3, 3, 3]  # 10 questions, at most 3 per conversation
    for s in on_a:  # a copy never lands beside itself; each reply follows its own question
        questions = [m["content"] for m in s.messages[::2]]
        assert len(set(questions)) == len(questions)
        assert all(a_["content"] == q["content"].replace(" q0?", " a0")
                   for q, a_ in zip(s.messages[::2], s.messages[1::2]))
    assert caption in merged and two_turns in merged  # not single-turn Q&A: passed through as they were
    assert sum(1 for s in merged if s.image.name == "b.png") == 2  # same image, different groups: not merged
    assert counts == {"1 question(s)": 3, "3 question(s)": 3}
    assert questions_per_image(samples, max_turns=1, seed=0)[0] == samples  # off
