"""Benchmark loaders against fixtures that reproduce each release's exact file names, split names, columns
and quirks (tiny synthetic contents; the source of each fact is cited at its test), and VQA-RAD also on
the real copy in ../shared/data/vqa-rad (read there, never copied)."""

import base64
import csv
import io
import json
import os
import pickle
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gmai.eval.benchmarks import (ImageLoadError, MissingBenchmarkFile, UnknownSplit, get_spec, list_benchmarks,
                                  load_benchmark)

VQA_RAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "vqa-rad"
needs_vqa_rad = pytest.mark.skipif(not VQA_RAD.is_dir(), reason="shared VQA-RAD copy absent")


def png_bytes(color=(200, 10, 10), size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, color=(10, 200, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(color))
    return path


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_registry_lists_every_benchmark():
    assert set(list_benchmarks()) == {"vqa-rad", "slake", "pathvqa", "pmc-vqa", "omnimedvqa", "gmai-mmbench",
                                      "mmmu", "medxpertqa-mm", "gmai"}


@pytest.mark.parametrize("name,bad", [("slake", "val"), ("mmmu", "dev2"), ("pmc-vqa", "clean"),
                                      ("gmai-mmbench", "validation"), ("omnimedvqa", "test"), ("pathvqa", "dev")])
def test_unknown_split_is_an_error_listing_the_valid_ones(tmp_path, name, bad):
    with pytest.raises(UnknownSplit, match=re.escape(", ".join(get_spec(name).splits))):
        load_benchmark(name, tmp_path, split=bad)


# --------------------------------------------------------------------------------------------------
# VQA-RAD
# --------------------------------------------------------------------------------------------------

@needs_vqa_rad
def test_vqa_rad_real_json_layout():
    test = load_benchmark("vqa-rad", VQA_RAD)
    assert len(test) == 451 and not test.failures
    kinds = [it.answer_type for it in test]
    assert kinds.count("closed") == 272 and kinds.count("open") == 179  # the dataset's own labels
    assert {it.organ for it in test} == {"CHEST", "ABD", "HEAD"}
    assert test[0].load_images()[0].mode == "RGB"
    assert len(load_benchmark("vqa-rad", VQA_RAD, split="train")) == 3064


def hf_vqa_rad_copy(root: Path, order=None) -> Path:
    """The Hugging Face layout as flaviagiammarino/vqa-rad's scripts/processing.py makes it: keep
    (image_name, question, answer), drop duplicate triplets, lower-case and squeeze spaces, " ?" -> "?",
    copy each image byte for byte under a new name img_<i>.jpg; pushed as
    data/test-00000-of-00001-e5bc3d208bb4deeb.parquet with columns image, question, answer."""
    rows = json.loads((VQA_RAD / "testset.json").read_text())
    f = lambda x: re.sub(" +", " ", str(x).lower()).replace(" ?", "?").strip()  # noqa: E731 (their cleaning)
    seen, out = set(), []
    for r in rows:
        key = (r["image_name"], r["question"], r["answer"])
        if key in seen:
            continue
        seen.add(key)
        out.append({"image": {"bytes": (VQA_RAD / "images" / r["image_name"]).read_bytes(),
                              "path": f"img_{len(out)}.jpg"}, "question": f(r["question"]), "answer": f(r["answer"])})
    if order is not None:
        out = [out[i] for i in order(len(out))]
    write_parquet(root / "data" / "test-00000-of-00001-e5bc3d208bb4deeb.parquet", out)
    return root


@needs_vqa_rad
def test_vqa_rad_hf_layout_gets_the_official_qids_and_labels(tmp_path):
    official = {it.qid: it for it in load_benchmark("vqa-rad", VQA_RAD)}
    for order in (None, lambda n: list(reversed(range(n)))):  # row order does not matter
        hf = load_benchmark("vqa-rad", hf_vqa_rad_copy(tmp_path / str(order is None), order))
        assert not hf.failures and len(hf) == 451
        assert {it.qid for it in hf} == set(official)
        for it in hf:
            ref = official[it.qid]
            assert (it.question, it.answer, it.answer_type, it.organ) == (ref.question, ref.answer,
                                                                           ref.answer_type, ref.organ)
            # questions asked of several images (12 such (question, answer) pairs) land on the right image
            assert it.images[0].data == Path(ref.images[0].path).read_bytes()
    kinds = [it.answer_type for it in hf]
    assert kinds.count("closed") == 272 and kinds.count("open") == 179


@needs_vqa_rad
def test_vqa_rad_prediction_file_scores_the_same_on_both_layouts(tmp_path):
    from gmai.eval.runner import BenchSpec, EvalOptions, score_file

    official = load_benchmark("vqa-rad", VQA_RAD)
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"qid": it.qid, "prediction": it.answer if i % 3 else "no"}) + "\n"
                             for i, it in enumerate(official)))
    hf = hf_vqa_rad_copy(tmp_path / "hf", order=lambda n: list(reversed(range(n))))
    options = EvalOptions(baselines=False)
    a = score_file(preds, [BenchSpec("vqa-rad", str(VQA_RAD))], tmp_path / "a", options)["benchmarks"]["vqa-rad"]
    b = score_file(preds, [BenchSpec("vqa-rad", str(hf))], tmp_path / "b", options)["benchmarks"]["vqa-rad"]
    assert a["rules"] == b["rules"] and a["n_items"] == b["n_items"] == 451
    assert a["rules"]["gmai@1"]["by_type"]["closed"]["n"] == 272


def test_vqa_rad_hf_row_missing_from_the_index_is_a_failure(tmp_path):
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [
        {"image": {"bytes": png_bytes(), "path": "img_0.jpg"}, "question": "is this made up?", "answer": "yes"}])
    items = load_benchmark("vqa-rad", tmp_path)
    assert len(items) == 0 and items.failures[0]["qid"] == "hf-test-00000"
    assert "not in the official VQA-RAD test index" in items.failures[0]["reason"]


def test_vqa_rad_hf_row_with_an_answer_spelt_otherwise_maps_by_its_question(tmp_path):
    # qid 20 of the official test index: "How is the patient oriented?" -> "Posterior-Anterior"
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [
        {"image": {"bytes": png_bytes(), "path": "img_0.jpg"}, "question": "how is the patient oriented?",
         "answer": "pa"}])
    (item,) = load_benchmark("vqa-rad", tmp_path)
    assert (item.qid, item.answer, item.answer_type) == ("20", "Posterior-Anterior", "open")


def test_vqa_rad_json_layout_tiny(tmp_path):
    save_png(tmp_path / "images" / "a.jpg")
    rows = [{"qid": 1, "image_name": "a.jpg", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED",
             "question_type": "PRES", "question": "Is there a mass?", "phrase_type": "freeform"},
            {"qid": 2, "image_name": "gone.jpg", "image_organ": "HEAD", "answer": 2, "answer_type": "OPEN",
             "question_type": "COUNT", "question": "How many?", "phrase_type": "para"}]
    (tmp_path / "testset.json").write_text(json.dumps(rows))
    items = load_benchmark("vqa-rad", tmp_path)
    assert [it.qid for it in items] == ["1", "2"] and items[1].answer == "2"
    assert items[0].answer_type == "closed" and items[0].question_type == "PRES"
    assert items[0].load_images()[0].size == (8, 6)
    with pytest.raises(ImageLoadError, match="missing image file.*gone.jpg"):
        items[1].load_images()


def test_missing_files_say_what_to_fetch(tmp_path):
    with pytest.raises(MissingBenchmarkFile, match="flaviagiammarino/vqa-rad"):
        load_benchmark("vqa-rad", tmp_path)
    with pytest.raises(MissingBenchmarkFile, match="benchmark folder not found"):
        load_benchmark("slake", tmp_path / "nowhere")
    with pytest.raises(KeyError, match="unknown benchmark"):
        load_benchmark("vqa-nope", tmp_path)


# --------------------------------------------------------------------------------------------------
# SLAKE: the Slake1.0 release names its validation file validate.json; the Hugging Face copy
# BoKelvin/SLAKE renamed it validation.json (its README: "we have changed the name of validate.json to
# validation.json"). Rows: img_id, img_name ("xmlab1/source.jpg"), question, answer, q_lang (en / zh),
# location, modality, answer_type (OPEN / CLOSED), base_type, content_type, triple, qid; images in imgs/.
# --------------------------------------------------------------------------------------------------

def slake_rows(qid0: int) -> list[dict]:
    common = {"img_id": 1, "img_name": "xmlab1/source.jpg", "location": "Lung", "modality": "CT",
              "base_type": "vqa", "triple": ["vhead", "_", "_"]}
    return [{**common, "question": "Is this a CT?", "answer": "Yes", "q_lang": "en", "answer_type": "CLOSED",
             "content_type": "Modality", "qid": qid0},
            {**common, "question": "这是CT吗?", "answer": "是", "q_lang": "zh", "answer_type": "CLOSED",
             "content_type": "Modality", "qid": qid0 + 1},
            {**common, "question": "Where is the lesion?", "answer": "Left Lung", "q_lang": "en",
             "answer_type": "OPEN", "content_type": "Position", "qid": qid0 + 2}]


@pytest.mark.parametrize("validation_file", ["validate.json", "validation.json"])
def test_slake_release_files_and_english_default(tmp_path, validation_file):
    save_png(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    (tmp_path / "test.json").write_text(json.dumps(slake_rows(10), ensure_ascii=False))
    (tmp_path / validation_file).write_text(json.dumps(slake_rows(20), ensure_ascii=False))
    en = load_benchmark("slake", tmp_path)
    assert [it.qid for it in en] == ["10", "12"] and en[0].organ == "Lung" and en[0].modality == "CT"
    assert [it.answer_type for it in en] == ["closed", "open"]
    assert len(load_benchmark("slake", tmp_path, language="all")) == 3
    assert en[0].load_images()
    for split in ("validation", "validate"):  # the split under either release's name
        assert [it.qid for it in load_benchmark("slake", tmp_path, split=split)] == ["20", "22"]
    with pytest.raises(MissingBenchmarkFile, match="train.json"):
        load_benchmark("slake", tmp_path, split="train")


# --------------------------------------------------------------------------------------------------
# PathVQA: Hugging Face flaviagiammarino/path-vqa = data/{train,validation,test}-0000K-of-0000N-*.parquet
# (image, question, answer; 19,654 / 6,259 / 6,719 rows), made by its scripts/processing.py from the
# authors' pvqa/qas/{train,val,test}/{split}_qa.pkl (lists of {"image", "question", "answer"}, images at
# pvqa/images/{split}/<image>.jpg) with data.drop_duplicates(), then lower-casing.
# --------------------------------------------------------------------------------------------------

def test_pathvqa_hf_shards_and_archive_pickles_agree(tmp_path):
    triplets = [("test_0000", "Is this benign?", "yes"), ("test_0000", "Is this benign?", "yes"),  # duplicate
                ("test_0001", "What is shown?", "Granuloma"), ("test_0002", "How many nuclei?", "two")]
    archive = tmp_path / "pvqa"
    (archive / "qas" / "test").mkdir(parents=True)
    for name in {t[0] for t in triplets}:
        save_png(archive / "images" / "test" / f"{name}.jpg")
    with (archive / "qas" / "test" / "test_qa.pkl").open("wb") as fh:
        pickle.dump([{"image": i, "question": q, "answer": a} for i, q, a in triplets], fh)
    from_pickle = load_benchmark("pathvqa", tmp_path, split="test")
    assert [it.qid for it in from_pickle] == ["test-00000", "test-00001", "test-00002"]
    assert from_pickle[0].answer_type == "closed" and from_pickle[1].answer_type == "open"
    assert from_pickle[2].load_images()

    hf = tmp_path / "hf"
    deduped = [triplets[0], *triplets[2:]]
    write_parquet(hf / "data" / "test-00000-of-00002-aaaa.parquet",
                  [{"image": {"bytes": png_bytes(), "path": None}, "question": q.lower(), "answer": a.lower()}
                   for _, q, a in deduped[:2]])
    write_parquet(hf / "data" / "test-00001-of-00002-bbbb.parquet",
                  [{"image": {"bytes": png_bytes(), "path": None}, "question": q.lower(), "answer": a.lower()}
                   for _, q, a in deduped[2:]])
    from_hf = load_benchmark("pathvqa", hf, split="test")
    assert [it.qid for it in from_hf] == [it.qid for it in from_pickle]  # shards read as one split
    assert [it.answer.lower() for it in from_hf] == [it.answer.lower() for it in from_pickle]


def test_pathvqa_archive_vqa_pickle_keeps_official_ids_and_types(tmp_path):
    # pvqa/qas/test_vqa.pkl rows as printed in public loaders: {'answer_type': 'other', 'img_id': 'train_0422',
    # 'label': {'in the canals of hering': 1}, 'question_id': 100422000, 'question_type': 'where', 'sent': ...}
    (tmp_path / "qas").mkdir()
    save_png(tmp_path / "images" / "test" / "test_0001.jpg")
    rows = [{"answer_type": "yes/no", "img_id": "test_0001", "label": {"yes": 1}, "question_id": 100001000,
             "question_type": "is", "sent": "Is this benign?"},
            {"answer_type": "other", "img_id": "test_0001", "label": {"granuloma": 1}, "question_id": 100001001,
             "question_type": "what", "sent": "What is shown?"}]
    with (tmp_path / "qas" / "test_vqa.pkl").open("wb") as fh:
        pickle.dump(rows + rows[:1], fh)  # a duplicate triplet
    items = load_benchmark("pathvqa", tmp_path)
    assert [(it.qid, it.answer, it.answer_type) for it in items] == [("100001000", "yes", "closed"),
                                                                     ("100001001", "granuloma", "open")]
    assert items[0].load_images()


def test_pathvqa_validation_under_both_release_names(tmp_path):
    write_parquet(tmp_path / "data" / "validation-00000-of-00001-cccc.parquet",
                  [{"image": {"bytes": png_bytes(), "path": None}, "question": "is this benign?", "answer": "yes"}])
    for split in ("validation", "val"):  # HF calls it validation, the pvqa archive val
        (item,) = load_benchmark("pathvqa", tmp_path, split=split)
        assert item.qid == "validation-00000" and item.modality == "pathology"


def test_pathvqa_pickle_that_names_code_is_refused(tmp_path):
    (tmp_path / "qas" / "test").mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))  # not print: an in-process Ray session replaces builtins.print

    (tmp_path / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(ValueError, match=r"refusing to load (posix|os)\.system"):
        load_benchmark("pathvqa", tmp_path)


# --------------------------------------------------------------------------------------------------
# PMC-VQA (Hugging Face xmcmic/PMC-VQA): test_clean.csv, test.csv, train.csv (version 1: Figure_path,
# Question, Answer, Choice A..D, Answer_label; choices "A:text") and test_2.csv / train_2.csv (version 2:
# index, Figure_path, Caption, Question, Choice A..D, Answer (the letter), split; choices " A: text ").
# Column orders as read by MedEvalKit's PMC_VQA loader and the dataset card.
# --------------------------------------------------------------------------------------------------

def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_pmc_vqa_split_names_are_the_release_files(tmp_path):
    save_png(tmp_path / "images" / "PMC1_F1.jpg")
    save_png(tmp_path / "images_2" / "figures" / "PMC2_F2.jpg")
    write_csv(tmp_path / "test_clean.csv",
              ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"],
              [["PMC1_F1.jpg", "What is shown?", "Brain stem", "A:Cerebellum", "B:Brain stem", "C:Pons",
                "D:Thalamus", "B"]])
    write_csv(tmp_path / "test_2.csv",
              ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
               "Answer", "split"],
              [[7, "PMC2_F2.jpg", "cap", "Which stain?", " A: H&E ", " B: PAS ", " C: Trichrome ", " D: Gram ", "C",
                "test"], [8, "PMC2_F2.jpg", "cap", "Broken row?", " A: x ", " B: y ", " C: z ", " D: w ", "E", "test"]])
    (clean,) = load_benchmark("pmc-vqa", tmp_path)  # default: the clean test set papers report
    assert clean.split == "test_clean" and clean.answer == "B" and clean.meta["answer_text"] == "Brain stem"
    assert clean.options == {"A": "Cerebellum", "B": "Brain stem", "C": "Pons", "D": "Thalamus"}
    assert clean.load_images()
    v2 = load_benchmark("pmc-vqa", tmp_path, split="test_2")
    assert [(it.qid, it.answer, it.options["C"]) for it in v2] == [("7", "C", "Trichrome")]
    assert v2[0].load_images()
    assert v2.failures == [{"qid": "8", "reason": "gold 'E' is not one of the options ['A', 'B', 'C', 'D']"}]
    with pytest.raises(MissingBenchmarkFile, match="test.csv"):
        load_benchmark("pmc-vqa", tmp_path, split="test")  # test never silently means test_2.csv


def test_pmc_vqa_gold_letter_from_whichever_column_holds_it():
    from gmai.eval.benchmarks.pmc_vqa import gold_label

    options = {"A": "Cerebellum", "B": "Brain stem", "C": "Pons", "D": "Thalamus"}
    assert gold_label({"Answer": "Brain stem", "Answer_label": "b"}, options) == "B"  # v1
    assert gold_label({"Answer": "C"}, options) == "C"  # v2: the letter
    assert gold_label({"Anwser": "B:Brain stem"}, options) == "B"  # the card's spelling, text only
    assert gold_label({"Answer": "Medulla"}, options) == "MEDULLA"  # no option: a failure at load


# --------------------------------------------------------------------------------------------------
# OmniMedVQA (Hugging Face foreverbeliever/OmniMedVQA, OmniMedVQA.zip): OmniMedVQA/QA_information/
# {Open-access,Restricted-access}/<dataset>.json + Images/; rows {dataset, question_id, question_type,
# question, gt_answer, image_path, option_A..D, modality_type}.
# --------------------------------------------------------------------------------------------------

def omni_row(qid, gt, options, image="Images/ACRIMA/a.png"):
    return {"dataset": "ACRIMA", "question_id": qid, "question_type": "Disease Diagnosis", "question": "Finding?",
            "gt_answer": gt, "image_path": image, **{f"option_{k}": v for k, v in zip("ABCD", options)},
            "modality_type": "Fundus Photography"}


def test_omnimedvqa_halves_and_per_row_failures(tmp_path):
    root = tmp_path / "OmniMedVQA"  # the zip's top folder; passing its parent works too
    save_png(root / "Images" / "ACRIMA" / "a.png")
    (root / "QA_information" / "Open-access").mkdir(parents=True)
    (root / "QA_information" / "Restricted-access").mkdir(parents=True)
    (root / "QA_information" / "Open-access" / "ACRIMA.json").write_text(json.dumps([
        omni_row("ACRIMA_0001", "Glaucoma", ["Normal", "Glaucoma"]),
        omni_row("ACRIMA_0002", "Cataract", ["Normal", "Glaucoma"]),          # matches no option
        omni_row("ACRIMA_0003", "Normal", ["Normal", "normal.", "Glaucoma"]),  # exact text wins
        omni_row("ACRIMA_0004", "normal", ["Normal", "Normal.", "Glaucoma"])]))  # two loose matches
    (root / "QA_information" / "Restricted-access" / "AIDA.json").write_text(json.dumps([
        omni_row("AIDA_0001", "Normal", ["Normal", "Tumour"], image="Images/AIDA/b.png")]))
    open_half = load_benchmark("omnimedvqa", tmp_path)
    assert [(it.qid, it.answer) for it in open_half] == [("ACRIMA_0001", "B"), ("ACRIMA_0003", "A")]
    assert [f["qid"] for f in open_half.failures] == ["ACRIMA_0002", "ACRIMA_0004"]
    assert "matches 0 of the options" in open_half.failures[0]["reason"]
    assert open_half[0].modality == "Fundus Photography" and open_half[0].load_images()
    restricted = load_benchmark("omnimedvqa", root, split="Restricted-access")
    assert [it.qid for it in restricted] == ["AIDA_0001"]
    with pytest.raises(ImageLoadError):  # restricted images are not distributed: a failed item at run time
        restricted[0].load_images()
    assert len(load_benchmark("omnimedvqa", root, split="all")) == 3


# --------------------------------------------------------------------------------------------------
# GMAI-MMBench: OpenGVLab/GMAI-MMBench ships GMAI_mm_bench_VAL.tsv and GMAI_mm_bench_TEST_part_{1..11}.tsv
# (VLMEvalKit vlmeval/dataset/image_mcq.py GMAIMMBenchDataset.DATASET_URL); the VLMEvalKit mirror
# VLMEval/GMAI-MMBench names the VAL file GMAI-MMBench_VAL.tsv. Header includes "clinical VQA task"
# (VLMEvalKit lower-cases column names when scoring); TEST has no answer column; a short image value
# is the index of the row holding the image.
# --------------------------------------------------------------------------------------------------

GMAI_HEADER = ["index", "question", "A", "B", "C", "D", "E", "answer", "image", "category", "l2-category",
               "modality", "clinical VQA task", "department", "perceptual granularity"]


def write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("file_name", ["GMAI_mm_bench_VAL.tsv", "GMAI-MMBench_VAL.tsv"])
def test_gmai_mmbench_val_release_and_mirror_names(tmp_path, file_name):
    b64 = base64.b64encode(png_bytes()).decode()
    rows = [[0, "Which organ?", "Liver", "Lung", "Heart", "", "", "B", b64, "organ", "x", "CT", "Organ Recognition",
             "Radiology", "image level"],
            [1, "Which side?\nPick one.", "Left", "Right", "", "", "", "a", "0", "position", "x", "CT", "Position",
             "Radiology", "box level"]]
    write_tsv(tmp_path / file_name, GMAI_HEADER, rows)
    items = load_benchmark("gmai-mmbench", tmp_path)
    assert [it.answer for it in items] == ["B", "A"] and items[1].question == "Which side?\nPick one."
    assert items[0].options == {"A": "Liver", "B": "Lung", "C": "Heart"}
    assert items[0].question_type == "Organ Recognition" and items[0].organ == "Radiology"
    assert items[0].meta["perceptual granularity"] == "image level"
    assert all(ref.data is None for it in items for ref in it.images)  # nothing decoded at load
    assert items[1].load_images()[0].size == (8, 6)  # "0" points at row 0's image


def test_gmai_mmbench_test_parts_read_as_one_split(tmp_path):
    b64 = base64.b64encode(png_bytes()).decode()
    header = [h for h in GMAI_HEADER if h != "answer"]  # answers withheld in TEST
    for k in range(1, 12):
        write_tsv(tmp_path / f"GMAI_mm_bench_TEST_part_{k}.tsv", header,
                  [[2 * k, "Q?", "x", "y", "", "", "", b64, "c", "x", "CT", "T", "D", "image level"],
                   [2 * k + 1, "Q?", "x", "y", "", "", "", str(2 * k), "c", "x", "CT", "T", "D", "image level"]])
    items = load_benchmark("gmai-mmbench", tmp_path, split="test")
    assert len(items) == 0 and len(items.failures) == 22  # loaded, not scorable: no gold
    assert items.failures[0] == {"qid": "2", "reason": "no gold answer in this release (withheld or empty)"}
    (tmp_path / "GMAI_mm_bench_TEST_part_7.tsv").unlink()
    with pytest.raises(MissingBenchmarkFile, match="GMAI_mm_bench_TEST_part_7.tsv"):
        load_benchmark("gmai-mmbench", tmp_path, split="test")


# --------------------------------------------------------------------------------------------------
# MMMU (Hugging Face MMMU/MMMU): <Subject>/{dev,validation,test}-00000-of-00001.parquet; dev = 5 few-shot
# items per subject, validation = 30, test answers withheld ("?"). ids "validation_Clinical_Medicine_1".
# --------------------------------------------------------------------------------------------------

def mmmu_row(split, subject, n, answer="C"):
    return {"id": f"{split}_{subject}_{n}", "question": "Look at <image 1>. Diagnosis?",
            "options": "['Flu', 'Cold', 'Measles']", "explanation": "", "image_1": {"bytes": png_bytes(),
            "path": "1.png"}, "image_2": None, "img_type": "['Photographs']", "answer": answer,
            "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "x"}


def test_mmmu_dev_validation_and_test_map_exactly(tmp_path):
    subjects = ("Clinical_Medicine", "Pharmacy")
    for subject in subjects:
        for split in ("dev", "validation", "test"):
            write_parquet(tmp_path / subject / f"{split}-00000-of-00001.parquet",
                          [mmmu_row(split, subject, 1, answer="?" if split == "test" else "C")])
    val = load_benchmark("mmmu", tmp_path, subjects=subjects)
    assert [it.qid for it in val] == ["validation_Clinical_Medicine_1", "validation_Pharmacy_1"]
    assert val[0].options == {"A": "Flu", "B": "Cold", "C": "Measles"} and "[image 1]" in val[0].question
    dev = load_benchmark("mmmu", tmp_path, split="dev", subjects=subjects)
    assert [it.qid for it in dev] == ["dev_Clinical_Medicine_1", "dev_Pharmacy_1"]  # never the validation rows
    test = load_benchmark("mmmu", tmp_path, split="test", subjects=subjects)
    assert len(test) == 0 and len(test.failures) == 2
    with pytest.raises(MissingBenchmarkFile, match="Basic_Medical_Science"):
        load_benchmark("mmmu", tmp_path)  # default: all five subjects


# --------------------------------------------------------------------------------------------------
# MedXpertQA: Hugging Face TsinghuaC3I/MedXpertQA MM/{test,dev}.jsonl (options a mapping, label a letter,
# images file names) vs the official GitHub eval/data/medxpertqa/input/medxpertqa_mm_input.jsonl written by
# its prepare_medxpertqa.ipynb (options [{"letter", "content"}], label [letter], images [{"image_path"}]).
# --------------------------------------------------------------------------------------------------

MXQ_HF = {"id": "MM-0", "question": "Which step?\nAnswer Choices: (A) LCL repair (B) Capsular plication",
          "options": {"A": "LCL repair", "B": "Capsular plication"}, "label": "A",
          "images": ["MM-0-a.jpeg", "MM-0-b.jpeg"], "medical_task": "Treatment", "body_system": "Skeletal",
          "question_type": "Reasoning"}


def github_row(row: dict) -> dict:
    return {**row, "options": [{"letter": k, "content": v} for k, v in row["options"].items()],
            "label": [row["label"]], "images": [{"image_path": p} for p in row["images"]]}


def test_medxpertqa_hf_and_github_layouts_agree(tmp_path):
    hf = tmp_path / "hf"
    for name in MXQ_HF["images"]:
        save_png(hf / "images" / name)
    (hf / "MM").mkdir(parents=True)
    (hf / "MM" / "test.jsonl").write_text(json.dumps(MXQ_HF) + "\n")
    gh = tmp_path / "MedXpertQA" / "eval" / "data" / "medxpertqa"
    for name in MXQ_HF["images"]:
        save_png(gh / "images" / name)
    (gh / "input").mkdir(parents=True)
    bad = {**github_row(MXQ_HF), "id": "MM-1", "label": ["A", "B"]}
    (gh / "input" / "medxpertqa_mm_input.jsonl").write_text(json.dumps(github_row(MXQ_HF)) + "\n"
                                                            + json.dumps(bad) + "\n")
    (a,) = load_benchmark("medxpertqa-mm", hf)
    github = load_benchmark("medxpertqa-mm", tmp_path / "MedXpertQA")  # repo root, input folder or the file
    (b,) = github
    assert (a.qid, a.question, a.answer, a.options, a.organ) == (b.qid, b.question, b.answer, b.options, b.organ)
    assert a.question == "Which step?" and a.answer == "A"
    assert len(b.load_images()) == 2 and len(a.load_images()) == 2
    assert github.failures[0]["qid"] == "MM-1" and "one gold letter" in github.failures[0]["reason"]
    assert [it.qid for it in load_benchmark("medxpertqa-mm", gh / "input" / "medxpertqa_mm_input.jsonl")] == ["MM-0"]


# --------------------------------------------------------------------------------------------------
# The project's own held-out build layout
# --------------------------------------------------------------------------------------------------

def test_gmai_heldout_build_layout(tmp_path):
    """The data engine's layout: OUT/heldout/<split>/<subset>.jsonl, images relative to OUT."""
    save_png(tmp_path / "images" / "src" / "a.png")
    conv = lambda q, a: [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]  # noqa: E731
    common = {"image": "images/src/a.png", "split": "test", "source": "src", "modality": "CT", "organ": "liver"}
    instruct = [
        {"id": "2d#vqa#ct#src#1", **common, "conversations": conv("Is there a lesion?", "Yes."), "format": "qa_yesno",
         "question_type": "label", "answer_type": "closed", "answer": "yes", "options": []},
        {"id": "2d#cls#ct#src#2", **common, "format": "qa_choice", "question_type": "label", "answer_type": "choice",
         "conversations": conv("Which finding?\nA. tumour\nB. cyst\nAnswer with the option's letter.", "B. cyst"),
         "answer": "B", "options": ["A. tumour", "B. cyst"]},
        {"id": "2d#cls#ct#src#3", **common, "format": "conversation", "answer_type": "open", "answer": "",
         "conversations": conv("Hi", "Hello") + conv("More?", "No.")},
    ]
    caption = [{"id": "2d#cls#ct#src#4", **common, "conversations": conv("Describe.", "A CT."), "format": "caption",
                "answer_type": "", "answer": "", "options": []}]
    held = tmp_path / "heldout" / "test"
    held.mkdir(parents=True)
    (held / "MM-Instruct.jsonl").write_text("\n".join(json.dumps(x) for x in instruct) + "\n")
    (held / "MM-Caption.jsonl").write_text(json.dumps(caption[0]) + "\n")
    items = load_benchmark("gmai", tmp_path)
    assert [it.qid for it in items] == ["2d#vqa#ct#src#1", "2d#cls#ct#src#2"]
    assert items[0].question == "Is there a lesion?" and items[0].modality == "CT" and items[0].organ == "liver"
    assert items[1].options == {"A": "tumour", "B": "cyst"} and items[1].answer == "B"
    assert items[1].question == "Which finding?" and items[1].meta["prompt"].endswith("option's letter.")
    from gmai.eval.runner import build_prompt

    assert build_prompt(items[1]) == items[1].meta["prompt"]  # the exact training-format prompt
    assert items[0].load_images()
    from gmai.eval.benchmarks import gmai_heldout

    assert gmai_heldout.LAST_SKIPPED == {"no answer_type (caption)": 1, "not a single-turn question": 1}
    # a single held-out file works too; its image root is found above it
    assert len(load_benchmark("gmai", held / "MM-Instruct.jsonl")) == 2
    with pytest.raises(MissingBenchmarkFile, match="held-out splits present: \\['test'\\]"):
        load_benchmark("gmai", tmp_path, split="val")


def test_duplicate_question_ids_are_refused(tmp_path):
    save_png(tmp_path / "images" / "a.jpg")
    row = {"qid": 1, "image_name": "a.jpg", "answer": "yes", "answer_type": "CLOSED", "question": "q?"}
    (tmp_path / "testset.json").write_text(json.dumps([row, row]))
    with pytest.raises(ValueError, match="duplicate question id"):
        load_benchmark("vqa-rad", tmp_path)


def test_max_side_downscales_like_the_data_build(tmp_path):
    from gmai.eval.benchmarks import ImageRef

    ref = ImageRef(path=str(save_png(tmp_path / "a.png")))
    assert ref.load().size == (8, 6)
    assert ref.load(max_side=4).size == (4, 3)
    assert ref.load(max_side=100).size == (8, 6)  # never upscaled
