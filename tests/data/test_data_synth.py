"""gmai.data.synth: deterministic synthetic phantoms in standard layouts + pip-shipped real images."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gmai.data import synth
from gmai.data.records import Record
from gmai.data.sources import get_source, parse_spec


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _load_all(spec: str) -> tuple[list[Record], list]:
    kind, path, options = parse_spec(spec)
    source = get_source(kind)
    records, rejects = [], []
    for item in source.items(path, options):
        for out in source.load(path, item, options):
            (records if isinstance(out, Record) else rejects).append(out)
    return records, rejects


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    datasets, _ = synth.write_corpus(out, seed=3, scale=0.15, real=False)
    return out, datasets


def test_deterministic_for_a_seed(tmp_path):
    out, again, other = tmp_path / "out", tmp_path / "again", tmp_path / "other"
    for folder, seed in ((out, 3), (again, 3), (other, 4)):
        synth.write_corpus(folder, seed=seed, scale=0.04, real=False)
    strip = lambda d: _tree_digest(d)  # noqa: E731
    # sources.txt/SYNTHETIC.md hold the folder path; compare everything else
    for name in ("synthetic-lesion-cls", "synthetic-ct-liver3d", "synthetic-cellmnist.npz", "synthetic-dicom"):
        a, b, c = out / name, again / name, other / name
        if a.is_file():
            assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
        else:
            assert strip(a) == strip(b) and strip(a) != strip(c)


def test_every_dataset_loads_through_its_adapter(corpus):
    out, datasets = corpus
    assert [d.spec for d in datasets] == (out / "sources.txt").read_text().split()
    assert all(d.name.startswith("synthetic-") for d in datasets)
    for d in datasets:
        records, rejects = _load_all(d.spec)
        assert records, d.name
        assert all(r.source == d.name for r in records)
        # only the nifti recipe's summary of empty slices may reject
        assert all("without foreground" in r.reason for r in rejects), [r.reason for r in rejects]


def test_variety_a_tiny_model_can_learn_from(corpus):
    out, datasets = corpus
    spec = {d.name: d.spec for d in datasets}
    cls, _ = _load_all(spec["synthetic-lesion-cls"])
    assert Counter(r.labels[0] for r in cls if r.split == "train") == Counter({c: 9 for c in synth.LESION_CLASSES})
    # classes differ in pixels: calcifications are the only near-white specks inside the body
    means = {c: np.mean([np.mean(r.image > 250) for r in cls if r.labels == [c]]) for c in synth.LESION_CLASSES}
    assert means["calcification"] > means["cyst"]
    seg, _ = _load_all(spec["synthetic-lesion-seg2d"])
    locations = {f.location for r in seg for f in r.mask_facts}
    assert len(locations) >= 4
    det, _ = _load_all(spec["synthetic-nodule-det"])
    assert {len(r.boxes) for r in det} >= {1, 2, 3} and all(1 <= len(r.boxes) <= 4 for r in det)
    assert {r.modality for r in cls + seg + det} == {"CT", "MR", "X-ray"}


def test_ct_volumes_need_a_window(corpus):
    out, _ = corpus
    records, _ = _load_all(f"nifti:{out / 'synthetic-ct-liver3d'}")
    assert records and records[0].modality == "CT" and "soft-tissue" in records[0].meta["windowing"]
    tumour = next(r for r in records if "tumor" in r.labels)
    liver_box = next(f for f in tumour.mask_facts if f.label == "liver").box
    assert liver_box.x1 < 0.5  # liver on the patient's right = the image's left (radiological view)
    percentile, _ = _load_all(f"nifti:{out / 'synthetic-ct-liver3d'}?window=percentile")
    assert not np.array_equal(percentile[0].image, records[0].image)


def test_synthetic_dicom_is_deidentified(corpus):
    out, _ = corpus
    records, rejects = _load_all(f"dicom:{out / 'synthetic-dicom'}")
    assert not rejects and {r.modality for r in records} == {"CT", "X-ray"}
    dump = json.dumps([r.describe() for r in records], default=str)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber", "InstitutionName"):
        assert synth.FAKE_IDENTITY[key] not in dump
    cr = next(r for r in records if r.modality == "X-ray")
    assert "MONOCHROME1 inverted" in cr.meta["windowing"]
    # bone (white on a radiograph) stays white after the MONOCHROME1 inversion
    h, w = cr.image.shape
    assert cr.image[int(h * 0.8), w // 2] > cr.image[h // 2, 2] + 100
    ct = next(r for r in records if r.modality == "CT")
    assert "file window (L40/W80)" in ct.meta["windowing"] and ct.organ == "head"


def test_real_pip_sources(tmp_path):
    datasets, missing = synth.default_real_sources(tmp_path)
    names = {d.name for d in datasets}
    if "pydicom-testdata" not in names:
        pytest.skip(f"pip-shipped data missing: {missing}")
    modalities = Counter()
    for d in datasets:
        records, rejects = _load_all(d.spec)
        # the only rejects: pydicom-data's ultrasound and DERIVED images, for their burned-in text risk (#12)
        assert records and all(r.reason.startswith("burned-in text risk") for r in rejects), d.name
        assert not rejects or d.name == "pydicom-testdata"
        modalities.update(r.modality for r in records)
    assert {"CT", "MR"} <= set(modalities)
    if not missing:
        assert {"fundus", "pathology"} <= set(modalities)


def test_cli_synth_command(tmp_path):
    from typer.testing import CliRunner

    from gmai.cli import app

    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "c"), "--scale", "0.05", "--no-real"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "c" / "sources.txt").read_text().split()) == 7  # six 2-D/3-D layouts + the volume-as-slices set (TotalSegmentator layout)
    assert "synthetic" in (tmp_path / "c" / "SYNTHETIC.md").read_text()
