"""Per-structure mask folders (the TotalSegmentator layout) and volumes read as slice sequences.

TotalSegmentator's release layout, as public loaders read it: ``<root>/sNNNN/ct.nii.gz`` with
``<root>/sNNNN/segmentations/<class>.nii.gz`` (one binary mask per class, file name = class name) and a
semicolon-separated ``meta.csv`` (UTF-8 with BOM) whose ``image_id`` and ``split`` columns assign each case
(github.com/kaiko-ai/eva src/eva/vision/data/datasets/segmentation/total_segmentator_2d.py: ``ct.nii.gz``,
``segmentations/*.nii.gz``; meta.csv columns image_id;age;gender;institute;study_type;split;manufacturer;
scanner_model;kvp;pathology;pathology_location as quoted by public loaders of Totalsegmentator_dataset_v201).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmai.data.build import BuildConfig, SourceSpec, output_ref, run_build
from gmai.data.generate.templates import TemplateGenerator
from gmai.data.imaging import volume_slice
from gmai.data.records import Record, Reject
from gmai.data.sources import get_source
from gmai.data.sources._common import OptionError
from gmai.data.synth import abdomen_volume, write_totalseg_volumes

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(nib.Nifti1Image(data, AFFINE).to_bytes(), mtime=0))


def run(path: Path, options: dict[str, str]) -> tuple[list[Record], list[Reject]]:
    source = get_source("nifti")
    out = [o for item in source.items(path, options) for o in source.load(path, item, options)]
    return [o for o in out if isinstance(o, Record)], [o for o in out if isinstance(o, Reject)]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("totalseg") / "Totalsegmentator_dataset"
    rng = np.random.default_rng(5)
    truth = {}
    for i, split in enumerate(("train", "train", "test")):
        hu, masks = abdomen_volume(rng, 48, 12)
        masks.setdefault("tumor", np.zeros(hu.shape, bool))
        masks["kidney_left"] = np.zeros(hu.shape, bool)  # outside the field of view: an all-empty mask, as released
        save(root / f"s{i:04d}" / "ct.nii.gz", hu)
        for name, mask in masks.items():
            save(root / f"s{i:04d}" / "segmentations" / f"{name}.nii.gz", mask.astype(np.uint8))
        truth[f"s{i:04d}"] = masks
    (root / "meta.csv").write_text("\ufeffimage_id;age;gender;institute;study_type;split;manufacturer;scanner_model;"
                                   "kvp;pathology;pathology_location\n"
                                   "s0000;61;m;A;ct abdomen;train;;;;;\ns0001;70;f;B;ct abdomen;train;;;;;\n"
                                   "s0002;55;f;A;ct abdomen;test;;;;;\n", encoding="utf-8")
    return root, truth


def test_per_structure_folders_name_structures_by_file_and_split_by_meta_csv(cases):
    root, truth = cases
    records, rejects = run(root, {"modality": "CT"})
    assert records and not [r for r in rejects if "slice(s) without foreground" not in r.reason]
    for record in records:
        case = Path(record.ref).parent.name
        assert record.split == ("test" if case == "s0002" else "train")
        index = record.meta["slice"]
        for fact in record.mask_facts:
            mask = volume_slice(truth[case][fact.label], 2, index)
            ys, xs = np.nonzero(mask)
            h, w = mask.shape
            assert (fact.box.x1, fact.box.y1, fact.box.x2, fact.box.y2) == (
                xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
        assert "kidney_left" not in record.labels  # empty mask: not a structure of this case
    assert {label for r in records for label in r.labels} >= {"liver", "spleen"}


def test_overlapping_masks_are_reported_not_silently_merged(cases, tmp_path):
    root, truth = cases
    case = tmp_path / "ds" / "s0000"
    hu, masks = abdomen_volume(np.random.default_rng(1), 32, 8)
    save(case / "ct.nii.gz", hu)
    save(case / "segmentations" / "liver.nii.gz", (masks["liver"] | masks["spleen"]).astype(np.uint8))
    save(case / "segmentations" / "spleen.nii.gz", masks["spleen"].astype(np.uint8))
    _, rejects = run(tmp_path / "ds", {})
    overlap = [r for r in rejects if "also belong to an earlier structure" in r.reason]
    assert len(overlap) == 1 and "of spleen" in overlap[0].reason


def test_volume_as_slices_spans_the_labelled_extent_with_true_facts(cases):
    root, truth = cases
    records, _ = run(root, {"modality": "CT", "volume": "slices:4"})
    volumes = [r for r in records if r.task == "volume"]
    assert len(volumes) == 3 and all(len(v.images) == 4 for v in volumes)
    for volume in volumes:
        masks = truth[Path(volume.ref.split("#")[0]).parent.name]
        labelled = np.flatnonzero(np.any([m.any(axis=(0, 1)) for m in masks.values()], axis=0))
        chosen = volume.meta["volume"]["slices"]
        assert chosen[0] == labelled[0] and chosen[-1] == labelled[-1] and len(chosen) == 4
        for k, index in enumerate(chosen):  # the images are the displayed slices, in order
            assert volume.images[k].shape == volume_slice(masks["liver"], 2, index).shape
        for name, fact in volume.meta["volume"]["structures"].items():
            areas = [int(volume_slice(masks[name], 2, i).sum()) for i in chosen]
            assert fact["images"] == [k + 1 for k, a in enumerate(areas) if a > 0]
            assert fact["largest"] == int(np.argmax(areas)) + 1 and fact["extent"] == len(fact["images"])
        sides = {n: f["side"] for n, f in volume.meta["volume"]["structures"].items()}
        # the patient's right is on the image's left: the spleen (patient's left) on the right third of the image,
        # the liver (patient's right, reaching the midline) never there
        assert sides["spleen"] == "right" and sides["liver"] in ("left", "center")
        assert set(volume.labels) == {n for n, m in masks.items() if any(volume_slice(m, 2, i).any() for i in chosen)}


def test_volume_questions_carry_one_image_token_per_slice_and_true_answers(cases):
    root, _ = cases
    records, _ = run(root, {"modality": "CT", "volume": "slices:4", "volume_only": "true"})
    assert records and all(r.task == "volume" for r in records)
    formats = set()
    for record in records:
        facts = record.meta["volume"]["structures"]
        for seed in range(12):
            for sample in TemplateGenerator().generate(record, random.Random(seed)):
                first = sample.conversations[0]["value"]
                assert first.count("<image>") == 4 and first.startswith("<image>\n" * 4)
                formats.add(sample.format)
                if sample.format == "volume_structures":
                    assert sample.answer == ", ".join(sorted(n.replace("_", " ") for n in facts))
                elif sample.format in ("volume_largest", "volume_side", "volume_extent"):
                    name = next(n for n in facts if f"the {n}" in first)
                    key = sample.format.split("_")[1]
                    assert sample.answer == str(facts[name][key])
    assert formats == {"volume_caption", "volume_structures", "volume_largest", "volume_side", "volume_extent"}


def test_build_writes_each_slice_and_the_held_out_split_reads_them(tmp_path):
    data = write_totalseg_volumes(tmp_path / "corpus", np.random.default_rng(0), n=4, test=2, size=40, depth=10)
    out = tmp_path / "out"
    stats = run_build(BuildConfig(sources=[SourceSpec.parse(data.spec)], out=out, plots=False), progress=False,
                      log=lambda _: None).stats
    assert stats["accounting_ok"] and stats["records_by_task"] == {"3d volume": 4}
    rows = [json.loads(line) for line in (out / "MM-Instruct.jsonl").open()]
    assert rows and all(isinstance(r["image"], list) and len(r["image"]) == 3 for r in rows)
    assert all((out / p).is_file() for r in rows for p in r["image"])
    from gmai.eval.benchmarks import load_benchmark

    items = load_benchmark("gmai", out)
    assert items and all(len(item.images) == 3 and "<image>" not in item.question for item in items)
    import pyarrow.parquet as pq

    table = pq.read_table(next((out / "parquet" / "MM-Instruct").glob("train-*.parquet")))
    assert all(len(v) == 3 for v in table.column("images").to_pylist())
    from gmai.rl.questions import collect_data_engine

    assert collect_data_engine(out) == []  # R1 asks about one image at a time: multi-image rows are not its input


def test_bad_volume_option_fails_at_enumeration(cases):
    root, _ = cases
    for bad in ("slices:1", "slices", "frames:4", "slices:99"):
        with pytest.raises(OptionError, match="expected slices:N"):
            get_source("nifti").items(root, {"volume": bad})


def test_a_benchmark_image_among_the_slices_is_leakage(tmp_path):
    from PIL import Image

    data = write_totalseg_volumes(tmp_path / "corpus", np.random.default_rng(0), n=2, test=0, size=40, depth=10)
    source = get_source("nifti")
    path, options = Path(data.spec.split(":", 1)[1].split("?")[0]), dict(
        kv.split("=") for kv in data.spec.split("?")[1].split("&"))
    volume = next(o for item in source.items(path, options) for o in source.load(path, item, options)
                  if isinstance(o, Record))
    bench = tmp_path / "bench"
    bench.mkdir()
    Image.fromarray(volume.images[1]).save(bench / "leaked.png")  # the second slice, not the first
    out = tmp_path / "out"
    config = BuildConfig(sources=[SourceSpec.parse(data.spec)], out=out, plots=False, exclude_benchmarks=[str(bench)])
    run_build(config, progress=False, log=lambda _: None)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
    leaked = [r for r in rejects if r["stage"] == "leakage"]
    ref = output_ref(config.deid_secret, config.sources[0], volume.ref)  # keyed; the slices stay readable (#12)
    assert ref.endswith("#volume=slices:2,5,8") and volume.ref.endswith("#volume=slices:2,5,8")
    assert len(leaked) == 1 and leaked[0]["ref"] == ref and "leaked.png" in leaked[0]["reason"]
