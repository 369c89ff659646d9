"""``dicom-seg`` and ``rtstruct``: a CT series written with pydicom, a SEG written by highdicom and an
RTSTRUCT written by rt-utils from masks made here (gmai.data.synth.write_ct_seg_rtstruct), so the files
are real files of those formats, not our idea of them. The build over the folder must give region
captions and grounding samples naming the right structures, with boxes that match the masks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gmai.data.build import BuildConfig, SourceSpec, run_build
from gmai.data.records import Record, Reject
from gmai.data.sources import get_source
from gmai.data.synth import CT_SERIES_STRUCTURES, FAKE_IDENTITY, write_ct_seg_rtstruct

pytest.importorskip("highdicom")
pytest.importorskip("rt_utils")

BOX = re.compile(r"<box>\[\[([0-9.,]+)\]\]</box>")
REF = re.compile(r"<ref>([^<]+)</ref>")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("ctseg") / "case"
    return root, write_ct_seg_rtstruct(root, np.random.default_rng(3))


def run(kind: str, path: Path, options: dict[str, str] | None = None) -> tuple[list[Record], list[Reject]]:
    source = get_source(kind)
    out = [o for item in source.items(path, options or {}) for o in source.load(path, item, options or {})]
    return [o for o in out if isinstance(o, Record)], [o for o in out if isinstance(o, Reject)]


def both(root: Path) -> list[SourceSpec]:
    """Both sources over one folder, under one dataset name: the same slices under two dataset names would be
    cross-dataset duplicates, which the build rejects (and the default names are the source kinds)."""
    return [SourceSpec(kind, str(root), {"name": "ct-case"}) for kind in ("dicom-seg", "rtstruct")]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_files_are_what_the_libraries_write(fixture):
    root, _ = fixture
    seg, rt = pydicom.dcmread(root / "seg.dcm"), pydicom.dcmread(root / "rtstruct.dcm")
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert rt.Modality == "RTSTRUCT" and rt.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(CT_SERIES_STRUCTURES["seg"])
    assert [r.ROIName for r in rt.StructureSetROISequence] == list(CT_SERIES_STRUCTURES["rtstruct"])


def test_build_gives_region_captions_and_grounding_with_the_fixture_boxes(fixture, tmp_path):
    root, masks = fixture
    out = tmp_path / "out"
    stats = run_build(BuildConfig(sources=both(root), out=out, plots=False), progress=False, log=lambda _: None).stats
    assert stats["accounting_ok"] and stats["records_kept"] > 0
    rows = [json.loads(line) for name in ("MM-Caption", "MM-Percept") for line in (out / f"{name}.jsonl").open()]
    checked = {"region_caption": 0, "grounding": 0}
    names = {"seg": set(), "rtstruct": set()}
    for row in rows:
        if row["format"] not in checked:
            continue
        text = " ".join(turn["value"] for turn in row["conversations"])
        ref = REF.search(text)  # some grounding phrasings name the structure without <ref>
        label = ref.group(1) if ref else next(n for n in row["labels"] if n in row["conversations"][0]["value"])
        box = [float(v) for v in BOX.search(text).group(1).split(",")]
        file, index = row["ref"].rsplit("#slice=", 1)
        kind, index = "seg" if file.startswith("dicom-seg-") else "rtstruct", int(index)
        assert label in row["labels"] and label in CT_SERIES_STRUCTURES[kind]
        assert iou(box, mask_box(masks[label][index])) >= 0.9, (row["ref"], label, box)
        checked[row["format"]] += 1
        names[kind].add(label)
    assert checked["region_caption"] >= 10 and checked["grounding"] >= 10, checked
    assert names == {k: set(v) for k, v in CT_SERIES_STRUCTURES.items()}
    # laterality in image words: the liver (patient's right) is on the left of the image, the spleen on the right
    captions = [r for r in rows if r["format"] == "caption" and r["ref"].startswith("rtstruct-") and "spleen" in str(r)]
    assert captions and all("right" in r["conversations"][1]["value"].split("spleen")[1] for r in captions)


def test_rasterised_masks_match_the_fixture(fixture):
    root, masks = fixture
    for kind, names in (("dicom-seg", CT_SERIES_STRUCTURES["seg"]), ("rtstruct", CT_SERIES_STRUCTURES["rtstruct"])):
        records, _ = run(kind, root)
        for record in records:
            index = record.meta["slice"]
            for fact in record.mask_facts:
                assert fact.label in names
                area = masks[fact.label][index].mean()
                assert abs(fact.area_fraction - area) <= 0.1 * area, (kind, index, fact.label)


def test_the_seg_rtstruct_and_series_headers_the_sources_parse_are_deidentified(fixture, monkeypatch):
    import gmai.data.sources.dicom_seg as seg_module
    import gmai.data.sources.rtstruct as rt_module

    root, _ = fixture
    seen = []

    def spy(original):
        def wrapped(parsed, series, ref, source):
            seen.append(getattr(parsed, "_dataset", parsed))
            seen.extend(series.headers)
            return original(parsed, series, ref, source)
        return wrapped

    monkeypatch.setattr(seg_module, "_segment_masks", spy(seg_module._segment_masks))
    monkeypatch.setattr(rt_module, "_roi_masks", spy(rt_module._roi_masks))
    assert run("dicom-seg", root)[0] and run("rtstruct", root)[0]
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                 for p in [root / "seg.dcm", root / "rtstruct.dcm", *sorted((root / "ct").glob("*.dcm"))]}
    modalities = {str(ds.Modality) for ds in seen}
    assert {"SEG", "RTSTRUCT", "CT"} <= modalities and len(seen) == 2 + 2 * 12
    for ds in seen:
        # Table E.1-1 gives Z (zero length) for these Type 2 attributes: present, empty
        assert ds.PatientIdentityRemoved == "YES" and not ds.get("PatientName") and not ds.get("PatientID")
        assert not ds.get("StudyDate") and str(ds.SOPInstanceUID) not in originals


def test_every_file_read_is_deidentified(fixture, tmp_path):
    root, _ = fixture
    out = tmp_path / "out"
    run_build(BuildConfig(sources=both(root), out=out, plots=False), progress=False, log=lambda _: None)
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for value in ("SYNTHETIC^PHANTOM", FAKE_IDENTITY["PatientID"], FAKE_IDENTITY["AccessionNumber"],
                  FAKE_IDENTITY["InstitutionName"]):
        assert value.encode() not in written
    original = str(pydicom.dcmread(root / "seg.dcm").SOPInstanceUID)
    assert original.encode() not in written
    # no path, file or folder name either (issue #12): refs are keyed hashes, the dataset name is name=
    for name in (str(root.parent), "ctseg", "seg.dcm", "rtstruct.dcm", "slice_0"):
        assert name.encode() not in written, name


def test_reference_to_a_series_not_in_the_folder_is_rejected(fixture, tmp_path):
    root, _ = fixture
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(root / "seg.dcm", lonely / "seg.dcm")
    shutil.copy(root / "rtstruct.dcm", lonely / "rtstruct.dcm")
    from gmai.data.sources.dicom import hashed_ref

    for kind, file in (("dicom-seg", "seg.dcm"), ("rtstruct", "rtstruct.dcm")):
        records, rejects = run(kind, lonely)
        assert not records and len(rejects) == 1
        assert "which is not in the source folder" in rejects[0].reason and rejects[0].ref == hashed_ref(file, kind)


def test_contour_outside_the_grid_is_rejected_and_the_other_roi_kept(fixture, tmp_path):
    root, _ = fixture
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    ds = pydicom.dcmread(bad / "rtstruct.dcm")
    spleen = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "spleen")
    contours = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == spleen).ContourSequence
    data = list(contours[0].ContourData)
    data[0] = float(data[0]) + 40.0  # 40 mm to the patient's left: 50 px at 0.8 mm, past the 64 px grid
    contours[0].ContourData = data
    ds.save_as(bad / "rtstruct.dcm")
    records, rejects = run("rtstruct", bad)
    off = [r for r in rejects if "outside the 64x64 image grid" in r.reason]
    assert len(off) == 1 and "'spleen'" in off[0].reason and off[0].ref.endswith(f"#roi={spleen}")
    assert records and all(r.labels == ["liver"] for r in records)


def _write_seg(root: Path, folder: Path, pixels: np.ndarray, labels: tuple[str, ...], kind: str,
               **extra) -> None:
    """A copy of the fixture's CT series in ``folder`` and a SEG over it, written by highdicom: one segment per
    label (segment i+1 is ``pixels[..., i]``), ``kind`` BINARY or FRACTIONAL."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    shutil.copytree(root / "ct", folder / "ct")
    series = sorted((pydicom.dcmread(p) for p in (folder / "ct").glob("*.dcm")),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    algorithm = hd.AlgorithmIdentificationSequence(name="test", version="1",
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(segment_number=i + 1, segment_label=name,
                                  segmented_property_category=codes.SCT.Organ, segmented_property_type=codes.SCT.Liver,
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                  algorithm_identification=algorithm)
        for i, name in enumerate(labels)
    ]
    hd.seg.Segmentation(
        source_images=series, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues[kind],
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=3, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="gmai", manufacturer_model_name="test", software_versions="1",
        device_serial_number="0", **extra,
    ).save_as(folder / "seg.dcm")


def test_segment_with_an_empty_mask_is_rejected(fixture, tmp_path):
    root, masks = fixture
    folder = tmp_path / "empty"
    pixels = np.stack([masks["liver"], np.zeros_like(masks["liver"])], axis=-1).astype(np.uint8)
    _write_seg(root, folder, pixels, ("liver", "nothing"), "BINARY")
    records, rejects = run("dicom-seg", folder)
    empty = [r for r in rejects if "has an empty mask" in r.reason]
    # "nothing" is not an anatomy or lesion word: de-identification names the segment generically
    assert len(empty) == 1 and "'structure 2'" in empty[0].reason and empty[0].ref.endswith("#segment=2")
    assert records and all(r.labels == ["liver"] for r in records)


def test_fractional_segments_are_cut_at_one_half(fixture, tmp_path):
    root, masks = fixture
    folder = tmp_path / "fractional"
    # probability 0.9 inside the liver, 0.2 in a halo around it: only the liver is the structure
    halo = np.zeros_like(masks["liver"])
    halo[:, 2:-2, 2:-2] = True
    probability = np.where(masks["liver"], 0.9, np.where(halo, 0.2, 0.0)).astype(np.float32)
    _write_seg(root, folder, probability, ("liver",), "FRACTIONAL", max_fractional_value=255)
    records, _ = run("dicom-seg", folder)
    assert records
    for record in records:
        (fact,) = record.mask_facts
        assert iou([fact.box.x1, fact.box.y1, fact.box.x2, fact.box.y2], mask_box(masks["liver"][record.meta["slice"]])) >= 0.95


def test_identifiers_typed_into_segment_labels_and_roi_names_never_reach_outputs(tmp_path, capfd):
    """SegmentLabel / ROIName are free text a person typed: de-identification keeps only names made of
    anatomy and lesion words and names any other structure generically ("structure <number>")."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    markers = {"tumor": "MKRSEGLABEL^JANE", "spleen": "MRN 44170923 MKRROINAME"}
    root = tmp_path / "case"
    write_ct_seg_rtstruct(root, np.random.default_rng(5), labels=markers)
    assert {str(s.SegmentLabel) for s in pydicom.dcmread(root / "seg.dcm").SegmentSequence} >= {markers["tumor"]}
    out = tmp_path / "out"
    stats = run_build(BuildConfig(sources=both(root), out=out, plots=False), progress=False, log=print).stats
    assert stats["records_kept"] > 0
    views = []
    for path in (p for p in out.rglob("*") if p.is_file()):
        views.append(path.read_bytes())
        if path.suffix == ".parquet":
            views.append(repr(pq.read_table(path).to_pylist()).encode())
        if path.suffix == ".png":
            views.append(repr(Image.open(io.BytesIO(path.read_bytes())).info).encode())
    captured = capfd.readouterr()
    everything = b"\n".join([*views, captured.out.encode(), captured.err.encode()]).upper()
    for word in ("MKRSEGLABEL", "MKRROINAME", "44170923"):
        assert word.encode() not in everything, word
    rows = [json.loads(line) for line in (out / "MM-Percept.jsonl").open()]
    labels = {label for row in rows for label in row.get("labels", [])}
    # renamed, not lost: the segment (number 2) and the ROI (number 1) are still there under generic names
    assert {"structure 1", "structure 2", "liver"} <= labels, labels
