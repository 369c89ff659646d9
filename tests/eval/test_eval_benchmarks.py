"""Benchmark loaders: each layout on a tiny file made here (synthetic), VQA-RAD also on the real copy."""

import base64
import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gmai.eval.benchmarks import ImageLoadError, MissingBenchmarkFile, list_benchmarks, load_benchmark

VQA_RAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "vqa-rad"


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


@pytest.mark.skipif(not VQA_RAD.is_dir(), reason="shared VQA-RAD copy absent")
def test_vqa_rad_real_json_layout():
    test = load_benchmark("vqa-rad", VQA_RAD)
    assert len(test) == 451
    kinds = [it.answer_type for it in test]
    assert kinds.count("closed") == 272 and kinds.count("open") == 179
    assert {it.organ for it in test} == {"CHEST", "ABD", "HEAD"}
    assert test[0].load_images()[0].mode == "RGB"
    assert len(load_benchmark("vqa-rad", VQA_RAD, split="train")) == 3064


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


def test_vqa_rad_hf_parquet_layout(tmp_path):
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [
        {"image": {"bytes": png_bytes(), "path": "x.png"}, "question": "is this a ct?", "answer": "no"},
        {"image": {"bytes": png_bytes(), "path": "y.png"}, "question": "where is the mass?", "answer": "left lobe"}])
    items = load_benchmark("vqa-rad", tmp_path, split="test")
    assert [(it.qid, it.answer_type) for it in items] == [("test-00000", "closed"), ("test-00001", "open")]
    assert items[1].load_images()[0].size == (8, 6)


def test_missing_files_say_what_to_fetch(tmp_path):
    with pytest.raises(MissingBenchmarkFile, match="flaviagiammarino/vqa-rad"):
        load_benchmark("vqa-rad", tmp_path)
    with pytest.raises(MissingBenchmarkFile, match="benchmark folder not found"):
        load_benchmark("slake", tmp_path / "nowhere")
    with pytest.raises(KeyError, match="unknown benchmark"):
        load_benchmark("vqa-nope", tmp_path)


def test_slake_english_by_default(tmp_path):
    save_png(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    rows = [{"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Is this a CT?", "answer": "Yes",
             "q_lang": "en", "location": "Lung", "modality": "CT", "answer_type": "CLOSED", "content_type": "Modality",
             "qid": 10},
            {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "这是CT吗?", "answer": "是", "q_lang": "zh",
             "location": "肺", "modality": "CT", "answer_type": "CLOSED", "content_type": "Modality", "qid": 11}]
    (tmp_path / "test.json").write_text(json.dumps(rows, ensure_ascii=False))
    en = load_benchmark("slake", tmp_path)
    assert [it.qid for it in en] == ["10"] and en[0].organ == "Lung" and en[0].modality == "CT"
    assert len(load_benchmark("slake", tmp_path, language="all")) == 2
    assert en[0].load_images()


def test_pathvqa_parquet(tmp_path):
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet",
                  [{"image": {"bytes": png_bytes(), "path": None}, "question": "is this benign?", "answer": "yes"}])
    items = load_benchmark("pathvqa", tmp_path, split="val")
    assert items[0].answer_type == "closed" and items[0].modality == "pathology"


def test_pmc_vqa_csv_strips_choice_prefixes(tmp_path):
    save_png(tmp_path / "images" / "PMC1_fig1.jpg")
    with (tmp_path / "test_2.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"])
        w.writerow(["PMC1_fig1.jpg", "What is shown?", "Brain stem", " A:Cerebellum ", " B:Brain stem ", " C:Pons",
                    " D:Thalamus", "B"])
    (item,) = load_benchmark("pmc-vqa", tmp_path)
    assert item.answer == "B" and item.options == {"A": "Cerebellum", "B": "Brain stem", "C": "Pons", "D": "Thalamus"}
    assert item.answer_type == "choice" and item.load_images()


def test_omnimedvqa_json_per_dataset(tmp_path):
    save_png(tmp_path / "Images" / "ACRIMA" / "a.png")
    qa = tmp_path / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    (qa / "ACRIMA.json").write_text(json.dumps([{
        "dataset": "ACRIMA", "question_id": "ACRIMA_0001", "question_type": "Disease Diagnosis",
        "question": "What is the finding?", "gt_answer": "Glaucoma", "image_path": "Images/ACRIMA/a.png",
        "option_A": "Normal", "option_B": "Glaucoma", "modality_type": "Fundus Photography"}]))
    (item,) = load_benchmark("omnimedvqa", tmp_path)
    assert item.answer == "B" and item.options == {"A": "Normal", "B": "Glaucoma"}
    assert item.modality == "Fundus Photography" and item.question_type == "Disease Diagnosis"
    assert item.load_images()


def test_gmai_mmbench_tsv_with_base64_and_image_references(tmp_path):
    b64 = base64.b64encode(png_bytes()).decode()
    header = ["index", "question", "A", "B", "C", "D", "E", "answer", "image", "category", "modality",
              "clinical vqa task", "department"]
    rows = [[0, "Which organ?", "Liver", "Lung", "Heart", "", "", "B", b64, "organ", "CT", "Organ Recognition", "Radiology"],
            [1, "Which side?", "Left", "Right", "", "", "", "a", "0", "position", "CT", "Position", "Radiology"]]
    with (tmp_path / "GMAI-MMBench_VAL.tsv").open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)
    items = load_benchmark("gmai-mmbench", tmp_path)
    assert [it.answer for it in items] == ["B", "A"]
    assert items[0].options == {"A": "Liver", "B": "Lung", "C": "Heart"}
    assert items[1].load_images()[0].size == (8, 6)  # "0" points at row 0's image
    assert items[0].question_type == "Organ Recognition" and items[0].modality == "CT"


def test_mmmu_health_and_medicine_parquet(tmp_path):
    subjects = ("Clinical_Medicine", "Pharmacy")
    for i, subject in enumerate(subjects):
        write_parquet(tmp_path / subject / "validation-00000-of-00001.parquet", [{
            "id": f"validation_{subject}_1", "question": "Look at <image 1>. Diagnosis?",
            "options": "['Flu', 'Cold', 'Measles']", "answer": "C", "image_1": {"bytes": png_bytes(), "path": "1.png"},
            "image_2": None, "question_type": "multiple-choice", "subfield": "x", "img_type": "['Photo']"}])
    items = load_benchmark("mmmu", tmp_path, subjects=subjects)
    assert len(items) == 2 and items[0].options == {"A": "Flu", "B": "Cold", "C": "Measles"}
    assert "[image 1]" in items[0].question and len(items[0].images) == 1
    with pytest.raises(MissingBenchmarkFile, match="Basic_Medical_Science"):
        load_benchmark("mmmu", tmp_path)  # default: all five subjects


def test_medxpertqa_mm_jsonl(tmp_path):
    save_png(tmp_path / "images" / "MM-1-a.jpeg")
    (tmp_path / "MM").mkdir()
    row = {"id": "MM-1", "question": "What next?\nAnswer Choices: (A) x (B) y", "options": {"A": "x", "B": "y"},
           "label": "B", "images": ["MM-1-a.jpeg"], "medical_task": "Treatment", "body_system": "Skeletal",
           "question_type": "Reasoning"}
    (tmp_path / "MM" / "test.jsonl").write_text(json.dumps(row) + "\n")
    (item,) = load_benchmark("medxpertqa-mm", tmp_path)
    assert item.question == "What next?" and item.answer == "B" and item.organ == "Skeletal"
    assert item.load_images()


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
