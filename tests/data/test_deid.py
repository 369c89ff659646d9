"""De-identification against an adversarial DICOM shelf (issue #12), at the pipeline level.

A default ``gmai data build --source dicom:DIR`` over the shelf from ``adversarial_dicom`` must leave
no marker in any output byte (Parquet decoded too, PNG text chunks too), stdout or stderr, and must
reject every file with a burned-in text risk. Every dataset the pipeline reads must come back from
the reader with no planted header value. ``test_mutation_*`` checks that these scans fail when
``deidentify`` is the identity.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from adversarial_dicom import MARKERS, marker, write_shelf

from gmai.data import deid, imaging

# Markers that live in the pixels (rendered text) or in a coded (CS) attribute kept in the header
# for the vocabulary to judge: they must not reach outputs, but a de-identified header may hold them.
_NOT_HEADER = ("MKRBT", "MKRBP")


def _build(shelf: Path, out: Path, capfd, *extra: str) -> tuple[str, str, int]:
    from gmai.cli import app

    try:
        app(["data", "build", "--source", f"dicom:{shelf}", "--out", str(out), "--quiet", "--no-plots", *extra],
            standalone_mode=False)
        code = 0
    except SystemExit as exit_:  # typer.Exit
        code = int(exit_.code or 0)
    captured = capfd.readouterr()
    return captured.out, captured.err, code


def _output_bytes(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, plus decoded views of compressed containers (Parquet, PNG text)."""
    import pyarrow.parquet as pq
    from PIL import Image

    views: dict[str, bytes] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        views[str(path)] = data
        if path.suffix == ".parquet":
            views[f"{path} (decoded)"] = repr(pq.read_table(path).to_pylist()).encode()
        if path.suffix == ".png":
            views[f"{path} (text chunks)"] = repr(Image.open(io.BytesIO(data)).info).encode()
    return views


def _found(blobs: dict[str, bytes], markers: list[str]) -> list[tuple[str, str]]:
    hits = []
    for where, data in blobs.items():
        upper = data.upper()
        hits += [(where, m) for m in markers if m.encode() in upper]
    return hits


@pytest.fixture
def shelf(tmp_path):
    root = tmp_path / f"{marker('RT')}-SMITH^JANE"
    expect = write_shelf(root)
    return root, expect


def _run_and_scan(shelf_root: Path, out: Path, capfd, read: list, extra: tuple[str, ...] = ()) -> dict:
    real = imaging.read_dicom_dataset

    def spy(path, **kwargs):  # keep what the pipeline itself read, as bytes a scan can grep
        ds = real(path, **kwargs)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        read.append(buffer.getvalue() + (getattr(ds, "preamble", None) or b""))
        return ds

    imaging.read_dicom_dataset, saved = spy, real
    try:
        stdout, stderr, code = _build(shelf_root, out, capfd, *extra)
    finally:
        imaging.read_dicom_dataset = saved
    blobs = {**_output_bytes(out), "stdout": stdout.encode(), "stderr": stderr.encode()}
    header_markers = [m for m in MARKERS if not m.startswith(_NOT_HEADER)]
    return {
        "code": code,
        "output_hits": _found(blobs, list(MARKERS)) + _found(blobs, [str(shelf_root.parent)]),
        "header_hits": _found({f"read #{i}": b for i, b in enumerate(read)}, header_markers),
        "stdout": stdout,
    }


def test_default_build_leaves_no_marker_and_rejects_every_burned_in_risk(shelf, tmp_path):
    """The user's view: ``gmai data build`` in its own process; every output byte, stdout and stderr."""
    import os
    import subprocess
    import sys

    root, expect = shelf
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(imaging.__file__).parents[2])}
    done = subprocess.run([sys.executable, "-m", "gmai.cli", "data", "build", "--source", f"dicom:{root}",
                           "--out", str(out)], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    blobs = {**_output_bytes(out), "stdout": done.stdout, "stderr": done.stderr}
    assert _found(blobs, list(MARKERS) + [str(root.parent)]) == []
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    burned = [r for r in rejects if r["reason"].startswith("burned-in text risk")]
    assert len(burned) == sum(v == "burned-in" for v in expect.values())
    assert len(rejects) == sum(v != "kept" for v in expect.values())
    assert all(r["ref"].startswith("dicom-") and r["source"] == "dicom" for r in rejects)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_kept"] == 2 and stats["sources"] == ["dicom"]
    assert stats["records_by_source"] == {"dicom": 2}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["dicom"]


def test_every_dataset_the_pipeline_reads_is_deidentified(shelf, tmp_path, capfd):
    root, expect = shelf
    read: list[bytes] = []
    result = _run_and_scan(root, tmp_path / "out", capfd, read)
    assert result["code"] == 0, result["stdout"]
    assert result["output_hits"] == [] and result["header_hits"] == []
    assert len(read) == sum(v != "not DICOM" for v in expect.values())  # the scan saw every DICOM file


def test_mutation_identity_deidentify_turns_the_scan_red(shelf, tmp_path, capfd, monkeypatch):
    """If the header were not de-identified, the pipeline test above must fail."""
    root, _ = shelf
    monkeypatch.setattr(imaging, "deidentify", lambda ds, options=None: ds)
    result = _run_and_scan(root, tmp_path / "out", capfd, [])
    assert result["header_hits"], "the scan cannot see a header that was not de-identified"
    found = {m[:5] for _, m in result["header_hits"]}
    assert {"MKRPN", "MKRID", "MKRPV", "MKROV", "MKRCV", "MKRD3", "MKRAE", "MKRPR"} <= found


def test_mutation_keeping_burned_in_files_turns_the_scan_red(shelf, tmp_path, capfd, monkeypatch):
    root, expect = shelf
    monkeypatch.setattr(imaging, "burned_in_risk", lambda ds: None)
    out = tmp_path / "out"
    _run_and_scan(root, out, capfd, [])
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sum(r["reason"].startswith("burned-in") for r in rejects) < sum(v == "burned-in" for v in expect.values())


# --------------------------------------------------------------------------------------------
# The table and its application


def test_table_is_the_full_2026d_table_with_every_option_column():
    """PS3.15 2026d Table E.1-1 as transcribed by PyMedPhys (pymedphys/pymedphys,
    lib/pymedphys/_dicom/deidentify/_standard/e1_1.json at 339bb77): 657 rows, ten Option columns."""
    from collections import Counter

    entries = deid.table()
    assert len(entries) == 657 and sum(e.is_private_row for e in entries) == 1
    actions = {e.action for e in entries}
    assert actions == {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    cells = Counter((column, value) for e in entries for column, value in e.options)
    assert cells == {("rtn_uids", "K"): 60, ("rtn_dev_id", "K"): 48, ("rtn_dev_id", "C"): 11, ("rtn_inst_id", "K"): 10,
                     ("rtn_pat_chars", "K"): 14, ("rtn_pat_chars", "C"): 5, ("rtn_long_full_dates", "K"): 169,
                     ("rtn_long_modif_dates", "C"): 169, ("clean_desc", "C"): 141, ("clean_struct_cont", "C"): 4,
                     ("clean_graph", "C"): 4, ("rtn_safe_priv", "C"): 1}
    header = deid.TABLE_FILE.read_text().split("\ngroup,")[0]
    assert "2026d" in header and "339bb77aa5c6f03f2b0c576d2ba025fbf709e738" in header and deid.EDITION == "2026d"
    assert deid.entry_for(0x00181002).options == (("rtn_uids", "K"), ("rtn_dev_id", "K"))  # Device UID
    assert deid.action_for(0x00100010) == "Z"  # Patient's Name
    assert deid.action_for(0x00080018) == "U"  # SOP Instance UID
    assert deid.action_for(0x60123000) == "X"  # Overlay Data, any 60xx group
    assert deid.action_for(0x50161234) == "X"  # Curve Data, any element of any 50xx group
    assert deid.action_for(0x00280010) is None  # Rows: not in the table


def _dataset_with_everything(tmp_path: Path) -> pydicom.Dataset:
    write_shelf(tmp_path / "shelf")
    path = next(p for p in (tmp_path / "shelf").rglob("*_ct.dcm"))
    return pydicom.dcmread(path)


def test_uids_remap_consistently_per_secret_and_differ_between_secrets(tmp_path):
    ds = _dataset_with_everything(tmp_path)
    study = str(ds.StudyInstanceUID)
    one, two = deid.DeidOptions(b"1" * 32), deid.DeidOptions(b"2" * 32)
    a, b, c = (deid.deidentify(pydicom.dcmread(ds.filename), o) for o in (one, one, two))
    assert a.StudyInstanceUID == b.StudyInstanceUID != c.StudyInstanceUID
    assert study not in str(a.StudyInstanceUID) and str(a.StudyInstanceUID).startswith("2.25.")
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert a.SOPClassUID == ds.SOPClassUID  # class UIDs name kinds of objects, not patients
    assert "<hidden>" in repr(one) and "1111" not in repr(one)


def test_deidentify_records_the_method_and_cleans_meta_and_preamble(tmp_path):
    ds = deid.deidentify(_dataset_with_everything(tmp_path), deid.DeidOptions(b"k" * 32))
    assert ds.PatientIdentityRemoved == "YES"
    assert "2026d" in ds.DeidentificationMethod and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.preamble == b"\0" * 128
    assert set(ds.file_meta.dir()) <= {"FileMetaInformationVersion", "MediaStorageSOPClassUID",
                                       "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID"}
    assert not ds.PatientName and not ds.PatientBirthDate and "PatientAge" not in ds
    assert ds.ClinicalTrialSubjectID == "REMOVED"  # D: a dummy of the same VR
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert not any(0x5000 <= elem.tag.group <= 0x60FF for elem in ds.iterall())
    deep = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    # X/Z/U*: kept under U* (a SEG places its frames on the source slices through these sequences), with
    # what it held scrubbed like any item: UIDs remapped, table entries applied, free text gone
    kept = deep.ReferencedImageSequence[0]
    assert "MKR" not in str(kept).upper() and not kept.get("PatientID") and kept.PersonName == "ANONYMOUS"


def test_retain_patient_characteristics_is_an_explicit_option(tmp_path):
    ds = _dataset_with_everything(tmp_path)
    ds.PatientSex, ds.PatientAge = "F", "045Y"
    kept = deid.deidentify(ds, deid.DeidOptions(b"k" * 32, retain_patient_characteristics=True))
    assert kept.PatientSex == "F" and kept.PatientAge == "045Y"
    assert [i.CodeValue for i in kept.DeidentificationMethodCodeSequence] == ["113100", "113108"]
    assert not kept.PatientName


def test_reading_prints_no_invalid_value(tmp_path, capfd, caplog):
    write_shelf(tmp_path / "shelf")
    capfd.readouterr()
    caplog.clear()
    for path in sorted((tmp_path / "shelf").rglob("*.dcm")):
        try:
            imaging.read_dicom(path)
        except imaging.ImageReadError as error:
            assert "MKR" not in error.reason
    captured = capfd.readouterr()
    assert "MKR" not in captured.out + captured.err + caplog.text
    pydicom.dcmread(next((tmp_path / "shelf").rglob("*_ct.dcm"))).FrameOfReferenceUID  # noqa: B018
    assert "MKRUI" in caplog.text  # the check can fail: a plain pydicom read does log the value


def test_secret_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "deid.key"
    first = deid.load_or_create_secret(path)
    assert deid.load_or_create_secret(path) == first and len(first) == 32
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("not hex")
    with pytest.raises(ValueError, match="not a de-identification secret"):
        deid.load_or_create_secret(path)


def test_body_part_goes_through_a_vocabulary(tmp_path):
    ds = _dataset_with_everything(tmp_path)
    assert "body_part" not in imaging.safe_header_summary(ds)  # free text: dropped
    ds.BodyPartExamined = "CHEST"
    assert imaging.safe_header_summary(ds)["body_part"] == "chest"
    assert "manufacturer" not in imaging.safe_header_summary(ds)


# --------------------------------------------------------------------------------------------
# Burned-in text: the opt-in OCR check (Debian's tesseract-ocr through pytesseract)


@pytest.fixture(scope="session")
def tesseract() -> None:
    """Debian's tesseract-ocr, installed with apt-get when missing (as the browser test does for chromium);
    skips with the reason when it cannot be."""
    import shutil

    from debian import install_or_skip

    pytesseract = pytest.importorskip("pytesseract", reason="pytesseract not installed (pip install '.[all]')")
    install_or_skip("tesseract-ocr", lambda: shutil.which("tesseract") is not None)
    pytesseract.get_tesseract_version()


def _us_file(tmp_path: Path, pixels) -> Path:
    from pydicom.uid import UltrasoundImageStorage

    path = tmp_path / "us.dcm"
    imaging.write_dicom(path, pixels, {"Modality": "US", "SOPClassUID": UltrasoundImageStorage})
    return path


def test_ocr_finds_rendered_text_rejects_or_redacts_it(tmp_path, tesseract):
    from adversarial_dicom import rendered_text

    texted = _us_file(tmp_path, rendered_text("MRN 4471902"))
    with pytest.raises(imaging.ImageReadError, match="burned-in text risk"):
        imaging.read_dicom(texted)  # the default
    with pytest.raises(imaging.ImageReadError, match="burned-in text found by OCR"):
        imaging.read_dicom(texted, burned_in="ocr")
    redacted = imaging.read_dicom(texted, burned_in="redact")
    assert imaging.find_text_boxes(redacted.frames[0]) == []  # nothing legible is left
    assert imaging.find_text_boxes(imaging.read_dicom(texted, burned_in="redact", window="percentile").frames[0]) == []
    clean = np.random.default_rng(0).integers(0, 60, size=(128, 128)).astype(np.uint8)
    assert imaging.read_dicom(_us_file(tmp_path, clean), burned_in="ocr").frames  # no text: kept


def test_ocr_mode_without_tesseract_rejects_with_the_reason(tmp_path, monkeypatch):
    pytesseract = pytest.importorskip("pytesseract")

    def missing():
        raise pytesseract.TesseractNotFoundError()

    monkeypatch.setattr(pytesseract, "get_tesseract_version", missing)
    from adversarial_dicom import rendered_text

    with pytest.raises(imaging.ImageReadError, match="needs tesseract-ocr"):
        imaging.read_dicom(_us_file(tmp_path, rendered_text("X")), burned_in="ocr")


# --------------------------------------------------------------------------------------------
# Coverage: every Table E.1-1 entry, at the top level and nested two sequences deep


def _sample_value(vr: str):
    from pydicom.dataset import Dataset

    values = {"PN": "MKRTAB^PERSON", "DA": "20200101", "TM": "101010", "DT": "20200101101010", "UI": "1.2.3.4.5.6",
              "AS": "045Y", "AT": 0x00100010, "UR": "http://mkrtab.example", "FL": 7.0, "FD": 7.0, "US": 7,
              "SS": 7, "UL": 7, "SL": 7, "SV": 7, "UV": 7, "IS": "7", "DS": "7.5"}
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = "MKRTAB"
        item.PatientName = "MKRTAB^ITEM"
        return [item]
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"MKRTAB00"
    return values.get(vr, "MKRTAB")


def _entry_tag(entry) -> int:
    if entry.is_private_row:
        return 0x00091010  # a private element (odd group)
    key = (entry.group + entry.element).replace("XX", "02", 1).replace("XXXX", "0000")
    return int(key.replace("X", "0"), 16)


def _planted_vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag).split(" or ")[0]
    except KeyError:  # newer than pydicom's dictionary (or private): planted as LO
        vr = "LO"
    return {"OB or OW": "OB", "US or SS": "US", "US or OW": "US"}.get(vr, vr)


def _plant(tag: int, vr: str, value, nested: bool):
    """(root to de-identify, the dataset holding the element)."""
    from pydicom.dataset import Dataset

    holder = Dataset()
    with deid.quiet_pydicom():
        holder.add_new(tag, vr, value)
    if not nested:
        return holder, holder
    inner = Dataset()
    inner.AnatomicRegionModifierSequence = [holder]  # sequences the table does not list
    root = Dataset()
    root.AnatomicRegionSequence = [inner]
    return root, holder


def _show(holder, tag: int, vr: str):
    """What the element holds after de-identification (None: removed); a sequence shows its items."""
    if tag not in holder:
        return None
    return "\n".join(map(str, holder[tag].value)) if vr == "SQ" else repr(holder[tag].value)


def coverage() -> dict[str, dict[str, int]]:
    """For each entry: plant a value, de-identify, check the original value is gone (or, with U, remapped)."""

    options = deid.DeidOptions(b"c" * 32)
    result = {"top-level": {"handled": 0, "total": 0}, "nested (depth 2)": {"handled": 0, "total": 0}}
    for entry in deid.table():
        tag = _entry_tag(entry)
        vr = _planted_vr(tag)
        for where in result:
            root, holder = _plant(tag, vr, _sample_value(vr), where.startswith("nested"))
            original = _show(holder, tag, vr)
            deid.deidentify(root, options)
            after = _show(holder, tag, vr)
            gone = after is None or (after != original and "MKRTAB" not in after)
            result[where]["total"] += 1
            result[where]["handled"] += int(gone)
    return result


def test_every_table_entry_is_applied_at_the_top_level_and_nested():
    table = coverage()
    assert table == {"top-level": {"handled": 657, "total": 657}, "nested (depth 2)": {"handled": 657, "total": 657}}


# --------------------------------------------------------------------------------------------
# The PS3.15 Options: each one changes exactly the entries its column lists


_CLEAN_SAMPLES = {"DA": "20200101", "DT": "20200101101010", "TM": "101010", "LO": "CT CHEST", "SH": "CT CHEST",
                  "LT": "CT CHEST", "ST": "CT CHEST", "UT": "CT CHEST", "UC": "CT CHEST", "AE": "CT", "CS": "CT"}
# Clean Graphics lists overlay and curve groups, whose bitmaps cannot be checked here: they stay removed;
# ROI Name always goes through the structure-name vocabulary (checked in test_segment_label_roi_name_...)
_NOT_CLEANED = ("50XXXXXX", "60XX3000", "60XX4000", "30060026")


def option_coverage(name: str) -> dict[str, tuple[int, int]]:
    """For Option ``name``, every entry its column lists (K: the planted value is kept; C: a planted marker is
    gone and a vocabulary value / date is cleaned, not dropped) and every entry it does not list (the same
    result as without the Option), each at the top level and nested. Counts (as expected, total)."""
    column = deid.OPTIONS[name][0]
    on, off = deid.DeidOptions.with_options(b"o" * 32, [name]), deid.DeidOptions(b"o" * 32)
    rows = [e for e in deid.table() if not e.is_private_row]
    listed = [e for e in rows if e.option(column)]
    rest = [e for e in rows if not e.option(column)]
    result = {"K kept": [0, 0], "C cleaned": [0, 0], "others unchanged": [0, 0]}
    for entry in listed + rest:
        tag, vr = _entry_tag(entry), _planted_vr(_entry_tag(entry))
        cell = entry.option(column)
        key = {"K": "K kept", "C": "C cleaned"}.get(cell, "others unchanged")
        result[key][1] += 1
        result[key][0] += int(_behaves(entry, tag, vr, cell, on, off))
    return {k: tuple(v) for k, v in result.items()}


def _behaves(entry, tag: int, vr: str, cell: str, on, off) -> bool:
    for nested in (False, True):
        root, holder = _plant(tag, vr, _sample_value(vr), nested)
        original = _show(holder, tag, vr)
        deid.deidentify(root, on)
        after = _show(holder, tag, vr)
        if cell == "K":
            ok = after is not None and (vr == "SQ" or after == original)
        elif cell == "C":
            ok = (after is None or "MKRTAB" not in after) and _cleans(entry, tag, vr, on, nested)
        else:
            other_root, other = _plant(tag, vr, _sample_value(vr), nested)
            deid.deidentify(other_root, off)
            ok = after == _show(other, tag, vr)
        if not ok:
            return False
    return True


def _cleans(entry, tag: int, vr: str, on, nested: bool) -> bool:
    """C keeps what it can vouch for: a vocabulary descriptor (normalised), a shifted date, a time, a sequence."""
    key = (entry.group + entry.element).upper()
    if key in _NOT_CLEANED[:3]:  # overlays and curves: removed
        root, holder = _plant(tag, vr, _sample_value(vr), nested)
        deid.deidentify(root, on)
        return tag not in holder
    if key in _NOT_CLEANED:
        return True
    if vr == "SQ":
        root, holder = _plant(tag, vr, _sample_value(vr), nested)
        deid.deidentify(root, on)
        return tag in holder and len(holder[tag].value) == 1
    if vr not in _CLEAN_SAMPLES:
        return True  # nothing to clean it into: the Basic Profile action (checked above: the marker is gone)
    root, holder = _plant(tag, vr, _CLEAN_SAMPLES[vr], nested)
    deid.deidentify(root, on)
    value = str(holder[tag].value) if tag in holder else None
    if vr in ("DA", "DT"):
        return value is not None and value != _CLEAN_SAMPLES[vr] and value[8:] == _CLEAN_SAMPLES[vr][8:]
    return value == _CLEAN_SAMPLES[vr].lower() or (vr == "TM" and value == _CLEAN_SAMPLES[vr])


@pytest.mark.parametrize("name", list(deid.OPTIONS))
def test_each_option_changes_exactly_the_entries_its_column_lists(name):
    result = option_coverage(name)
    assert all(done == total for done, total in result.values()), result
    # Retain Safe Private's column lists only the private row: test_retain_safe_private_keeps_...
    assert result["K kept"][1] + result["C cleaned"][1] > 0 or name == "retain_safe_private"


def test_retain_safe_private_keeps_only_listed_private_attributes_in_checked_forms():
    """Rows of PS3.15 2026d Table E.3.10-1 (GEMS_ACQU_01 (0019,xx23) DS Table Speed, (0019,xx9E) LO Internal
    Pulse Sequence Name; Philips Imaging DD 001 (2001,xx0B) CS Image Plane Orientation, (2001,xx6D) LO Text
    Font, (2001,xx7D) OW/OB Frame Pixel Data), next to private attributes the table does not list."""
    from pydicom.dataset import Dataset

    def shelf() -> Dataset:
        ds = Dataset()
        ge = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        ge.add_new(0x23, "DS", "39.37")
        ge.add_new(0x9E, "LO", "MKRSP1 SMITH")  # listed, but text outside the vocabulary
        ge.add_new(0x10, "LO", "MKRSP2")  # not listed
        philips = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        philips.add_new(0x0B, "CS", "TRANSVERSAL")
        philips.add_new(0x6D, "LO", "Axial")
        philips.add_new(0x7D, "OB", b"MKRSP3")  # listed, binary: cannot be checked
        other = ds.private_block(0x0029, "MKRSP4 CSA HEADER", create=True)  # creator not listed
        other.add_new(0x10, "LO", "axial")
        return ds

    kept = deid.deidentify(shelf(), deid.DeidOptions(b"k" * 32, retain_safe_private=True))
    private = {int(e.tag): e.value for e in kept if e.tag.is_private}
    assert private == {0x00190010: "GEMS_ACQU_01", 0x00191023: "39.37", 0x20010010: "Philips Imaging DD 001",
                       0x2001100B: "TRANSVERSAL", 0x2001106D: "axial"}
    assert "MKR" not in str(kept) and "113111" in [i.CodeValue for i in kept.DeidentificationMethodCodeSequence]
    default = deid.deidentify(shelf(), deid.DeidOptions(b"k" * 32))
    assert not any(e.tag.is_private for e in default)


def test_no_option_is_on_by_default():
    """Fails if any Option's default becomes on: the dataclass, the build config, the CLI and the YAML loader."""
    import dataclasses
    import inspect

    from gmai.data.build import BuildConfig
    from gmai.data.cli import build_command

    defaults = {f.name: f.default for f in dataclasses.fields(deid.DeidOptions) if f.name != "secret"}
    assert set(defaults) == set(deid.OPTIONS) and not any(defaults.values())
    assert deid.DeidOptions(b"k" * 32).enabled() == ()
    assert BuildConfig(sources=[], out=Path("x")).deid_options == ()
    params = inspect.signature(build_command).parameters
    assert params["deid_option"].default.default == [] and params["retain_patient_characteristics"].default.default is False


def test_options_are_recorded_in_the_method_and_code_sequence(tmp_path):
    ds = deid.deidentify(_dataset_with_everything(tmp_path),
                         deid.DeidOptions.with_options(b"k" * 32, ["retain-uids", "retain-modified-dates"]))
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113110", "113107"]
    assert {i.CodingSchemeDesignator for i in ds.DeidentificationMethodCodeSequence} == {"DCM"}
    assert list(ds.DeidentificationMethod)[1:] == ["Retain UIDs Option",
                                                   "Retain Longitudinal Temporal Information Modified Dates Option"]
    assert all(len(v) <= 64 for v in ds.DeidentificationMethod)  # LO
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    full = deid.deidentify(_dataset_with_everything(tmp_path), deid.DeidOptions(b"k" * 32, retain_full_dates=True))
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    with pytest.raises(ValueError, match="exclude each other"):
        deid.DeidOptions(b"k" * 32, retain_full_dates=True, retain_modified_dates=True)
    with pytest.raises(ValueError, match="unknown de-identification option 'retain-all'; known: retain-safe-private"):
        deid.DeidOptions.with_options(b"k" * 32, ["retain-all"])


def test_retain_uids_keeps_valid_uids_and_still_remaps_text_typed_into_a_uid_field():
    from pydicom.dataset import Dataset

    ds = Dataset()
    with deid.quiet_pydicom():
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", "1.2.MKRUI.SMITH^JOHN"
    deid.deidentify(ds, deid.DeidOptions(b"k" * 32, retain_uids=True))
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert ds.SeriesInstanceUID.startswith("2.25.") and "MKR" not in ds.SeriesInstanceUID


def test_every_option_on_still_leaves_no_marker_in_outputs_and_rejects_burned_in(shelf, tmp_path, capfd):
    """Options let header values through the de-identified dataset; the build's own protections (the output
    whitelist, hashed paths, the burned-in rule, the quiet reader) still hold, and the card says what was on."""
    root, expect = shelf
    out = tmp_path / "out"
    names = [n for n in deid.OPTIONS if n != "retain_full_dates"]  # it excludes retain_modified_dates
    flags = tuple(arg for n in names for arg in ("--deid-option", n.replace("_", "-")))
    read: list[bytes] = []
    result = _run_and_scan(root, out, capfd, read, flags)
    assert result["code"] == 0, result["stdout"]
    assert result["output_hits"] == []
    # the check can fail: the de-identified datasets the pipeline read do hold what the Options keep
    # (institution name, station name, device serial number)
    assert {"MKRIN", "MKRSN", "MKRDS"} <= {m[:5] for _, m in result["header_hits"]}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sum(r["reason"].startswith("burned-in text risk") for r in rejects) == sum(
        v == "burned-in" for v in expect.values())
    assert json.loads((out / "stats.json").read_text())["deid_options"] == names
    card = (out / "README.md").read_text()
    assert "Retain UIDs Option (`retain_uids`)" in card and "Clean Graphics Option (`clean_graphics`)" in card


def test_deid_options_come_from_the_yaml_and_the_command_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import gmai.data.build as build
    from gmai.cli import app

    seen = []
    monkeypatch.setattr(build, "run_build", lambda config, **kw: seen.append(config) or (_ for _ in ()).throw(
        FileNotFoundError("stop here")))
    (tmp_path / "b.yaml").write_text("sources: ['dicom:x']\ndeid_options: [retain-uids]\n")
    done = CliRunner().invoke(app, ["data", "build", "--config", str(tmp_path / "b.yaml"), "--out", str(tmp_path),
                                    "--deid-option", "clean-descriptors", "--deid-retain-patient-characteristics"])
    assert done.exit_code == 2 and seen
    assert seen[-1].deid_options == ("retain_uids", "retain_patient_characteristics", "clean_descriptors")


def test_an_unknown_deid_option_is_one_line(tmp_path, capfd):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gmai.cli", "data", "build", "--source", f"dicom:{tmp_path}",
                           "--out", str(tmp_path / "o"), "--deid-option", "retain-everything"],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(deid.__file__).parents[2])})
    assert done.returncode == 2 and "unknown de-identification option 'retain-everything'" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------
# The per-build secret and source labels


def test_secret_file_makes_refs_repeatable_across_builds_and_workers(shelf, tmp_path, capfd):
    from gmai.cli import app

    root, _ = shelf
    key = tmp_path / "keys" / "deid.key"
    refs = []
    for workers, out in (("1", "a"), ("2", "b"), ("1", "c")):
        args = ["data", "build", "--source", f"dicom:{root}", "--out", str(tmp_path / out), "-q", "--no-plots",
                "-w", workers]
        app(args + (["--deid-secret-file", str(key)] if out != "c" else []), standalone_mode=False)
        lines = (tmp_path / out / "rejects.jsonl").read_text().splitlines()
        refs.append(sorted(json.loads(line)["ref"] for line in lines))
    assert refs[0] == refs[1]  # same secret: same refs, whichever process read the file
    assert not set(refs[0]) & set(refs[2])  # a fresh secret (the default): nothing in common
    assert key.read_text().strip() not in "".join(
        p.read_text(errors="ignore") for p in (tmp_path / "a").rglob("*") if p.is_file())


def test_source_labels_carry_no_path():
    from gmai.data.build import SourceSpec

    assert SourceSpec("npz", "/data/DOE_JOHN/breast.npz", {"name": "breastmnist"}).label() == "npz:breastmnist"
    assert SourceSpec("dicom", "/data/DOE_JOHN", {}).label() == "dicom"


def test_a_dicom_build_resumes_only_with_the_same_secret(tmp_path):
    from gmai.data.build import BuildConfig, SourceSpec

    dicom = [SourceSpec("dicom", str(tmp_path))]
    same = BuildConfig(dicom, tmp_path / "o", deid_secret=b"a" * 32).fingerprint()
    assert BuildConfig(dicom, tmp_path / "o", deid_secret=b"a" * 32).fingerprint() == same
    assert BuildConfig(dicom, tmp_path / "o", deid_secret=b"b" * 32).fingerprint() != same
    npz = [SourceSpec("npz", str(tmp_path / "x.npz"))]  # no secret in its output: resumes with any
    assert BuildConfig(npz, tmp_path / "o").fingerprint() == BuildConfig(npz, tmp_path / "o").fingerprint()


def test_dicom_source_checks_its_burned_in_option(tmp_path):
    from gmai.data.sources import get_source
    from gmai.data.sources._common import OptionError

    with pytest.raises(OptionError, match="burned_in='keep'"):
        get_source("dicom").items(tmp_path, {"burned_in": "keep"})
    assert get_source("dicom").items(tmp_path, {"burned_in": "ocr"}) == []


# --------------------------------------------------------------------------------------------
# What SEG / RTSTRUCT readers need: structure names through a vocabulary, codes through the dictionary


def test_structure_names_pass_only_through_the_anatomy_and_lesion_vocabulary():
    assert deid.structure_name("Liver_Tumor") == "liver tumor"
    assert deid.structure_name("Kidney-Left") == "kidney left"
    assert deid.structure_name("GTV 1") == "gtv 1" and deid.structure_name("L5 vertebra") == "l5 vertebra"
    for typed in ("DOE^JANE", "liver DOE", "spleen 44170923", "", None, "liver " * 7):
        assert deid.structure_name(typed) is None, typed


def test_segment_label_roi_name_and_codes_after_deidentification():
    from pydicom.dataset import Dataset

    def coded(value, scheme, meaning):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        return item

    segment = Dataset()
    segment.SegmentNumber, segment.SegmentLabel = 3, "MKRSL^PATIENT"
    # a standard code (SCT 10200004 Liver) with a name typed into its meaning, and a local code
    segment.SegmentedPropertyTypeCodeSequence = [coded("10200004", "SCT", "MKRCM")]
    segment.SegmentedPropertyCategoryCodeSequence = [coded("MKRCV", "99LOCAL", "MKRLC")]
    liver = Dataset()
    liver.SegmentNumber, liver.SegmentLabel = 4, "Liver"
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 7, "MKRRN"
    ds = Dataset()
    ds.SegmentSequence, ds.StructureSetROISequence = [segment, liver], [roi]
    deid.deidentify(ds, deid.DeidOptions(b"s" * 32))
    assert "MKR" not in str(ds)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["structure 3", "liver"]
    assert ds.StructureSetROISequence[0].ROIName == "structure 7"
    known = ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (known.CodeValue, known.CodingSchemeDesignator, known.CodeMeaning) == ("10200004", "SCT", "Liver")
    local = ds.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0]
    assert (local.CodeValue, local.CodingSchemeDesignator) == ("UNKNOWN", "99GMAI")
