"""#12: no path, file name or folder name of the inputs reaches any output, for the non-DICOM sources.

The inputs' folder and file names carry marker strings (a name and an MRN, the way hospital exports name
things); the build runs through the CLI, and every byte it writes (rows, rejects, stats, README, image
paths, Parquet decoded to its values) and everything it prints is searched for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from gmai.cli import app
from gmai.data.build import SourceSpec, output_ref
from gmai.data.deid import keyed_hash

MARKERS = ("mrn123456", "doe_john", "doe-john", "doejohn", "john")  # searched case-insensitively
SECRET = "5e" * 32  # kept by the user with --deid-secret-file: the refs can be mapped back with it


def _texture(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 4, size // 4), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4), dtype=np.uint8))


def _imagefolder(root: Path) -> Path:
    folder = root / "MRN123456-DOE_JOHN"
    for label, seeds in (("normal", (1, 2)), ("abnormal", (3,))):  # class folders are the labels: shown by design
        (folder / label).mkdir(parents=True)
        for seed in seeds:
            Image.fromarray(_texture(seed)).save(folder / label / f"DOE_JOHN_1970_{seed}.png")
    (folder / "normal" / "DOE_JOHN_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a read reject
    return folder


def _npz(root: Path) -> Path:
    path = root / "MRN123456_DOE_JOHN.npz"
    images = np.stack([_texture(10 + i, 28) for i in range(6)])
    np.savez(path, train_images=images, train_labels=np.array([[0], [1], [0], [1], [0], [1]]))
    return path


def _nifti(root: Path) -> Path:
    """nnU-Net layout (imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz), the case and folder named by the patient."""
    folder = root / "MRN123456-DOE_JOHN-ct"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir(parents=True)
    hu = np.random.default_rng(0).integers(-200, 300, (40, 40, 4)).astype(np.int16)
    labels = np.zeros((40, 40, 4), dtype=np.uint8)
    labels[10:30, 10:30, 1:3] = 1
    nib.save(nib.Nifti1Image(hu, np.eye(4)), folder / "imagesTr" / "DOE_JOHN_case_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "labelsTr" / "DOE_JOHN_case.nii.gz")
    broken = folder / "imagesTr" / "MRN123456_bad_0000.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.eye(4)), broken)
    broken.write_bytes(broken.read_bytes()[:200])  # truncated: a reject whose library error names the file
    return folder


def _written_text(out: Path) -> list[tuple[str, str]]:
    """(where, text) for every file under OUT: its path, its bytes, and a Parquet file's decoded values."""
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        found.append((f"{path.relative_to(out)} (path)", str(path.relative_to(out))))
        found.append((str(path.relative_to(out)), path.read_bytes().decode("latin-1")))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            values = {name: table.column(name).to_pylist() for name in table.column_names if name != "image_bytes"}
            found.append((f"{path.relative_to(out)} (values)", repr(values) + repr(table.schema.metadata)))
    return found


def test_no_input_name_reaches_any_output_or_log(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    specs = [f"imagefolder:{_imagefolder(inputs)}?modality=CT",
             f"npz:{_npz(inputs)}?classes=benign,malignant&modality=ultrasound",
             f"nifti:{_nifti(inputs)}?labels=1=lesion&modality=CT&window=soft-tissue&min_area=4"]
    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(SECRET)
    out = tmp_path / "out"
    args = ["data", "build", "--out", str(out), "--workers", "1", "--deid-secret-file", str(secret_file)]
    result = CliRunner().invoke(app, [*args, *(a for s in specs for a in ("--source", s))])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    # the build did read all three sources (kept records and read rejects), so there was something to leak
    assert set(stats["records_by_source"]) == {"imagefolder", "npz", "nifti"}, stats["records_by_source"]
    assert {r["source"] for r in rejects if r["stage"] == "read"} >= {"imagefolder", "nifti"}
    assert any(p.suffix == ".parquet" for p in out.rglob("*"))
    texts = _written_text(out) + [("CLI output", result.output)]
    for where, text in texts:
        lowered = text.lower()
        assert not [m for m in MARKERS if m in lowered], where
        assert str(inputs) not in text, where
    # every ref is KIND-HMAC: whoever keeps the secret maps it back from the relative path
    rows = [json.loads(line) for line in (out / "MM-Caption.jsonl").read_text().splitlines()]
    spec = SourceSpec.parse(specs[0])
    relative = "normal/DOE_JOHN_1970_1.png"
    expected = "imagefolder-" + keyed_hash(bytes.fromhex(SECRET), "ref\0" + relative)
    assert output_ref(bytes.fromhex(SECRET), spec, str(Path(spec.path) / relative)) == expected
    assert expected in {r["ref"] for r in rows}


def test_an_adapter_that_raises_with_a_path_is_reported_without_it(tmp_path, monkeypatch):
    import gmai.data.sources as sources
    from gmai.data.build import BuildConfig, run_build

    folder = tmp_path / "MRN123456-DOE_JOHN"

    def load(path, item, options):
        raise ValueError(f"cannot open {path / item}")  # what a library's message does

    monkeypatch.setitem(sources._MODULES, "raising", "raising")
    monkeypatch.setitem(sources._REGISTRY, "raising", sources.Source("raising", lambda p, o: ["DOE_JOHN.png"], load))
    spec = SourceSpec("raising", str(folder))
    out = tmp_path / "out"
    run_build(BuildConfig(sources=[spec], out=out, plots=False, deid_secret=b"k"), progress=False, log=lambda _: None)
    [reject] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert reject == {"ref": output_ref(b"k", spec, "item 'DOE_JOHN.png'"), "source": "raising",
                      "reason": "adapter error: ValueError", "stage": "read"}
    assert reject["ref"].startswith("raising-")


def test_a_dicom_adapter_that_raises_is_reported_without_the_file_name(tmp_path, monkeypatch):
    """The DICOM adapters key their own refs; an item they fail on before keying it is keyed by the assembler."""
    import gmai.data.sources as sources
    from gmai.data.build import BuildConfig, run_build

    def load(path, item, options):
        raise ValueError("broken")

    for kind in ("dicom", "rtstruct"):
        monkeypatch.setitem(sources._MODULES, kind, kind)
        monkeypatch.setitem(sources._REGISTRY, kind, sources.Source(kind, lambda p, o: ["DOE_JOHN_1970.dcm"], load))
        out = tmp_path / kind
        spec = SourceSpec(kind, str(tmp_path / "MRN123456"))
        run_build(BuildConfig(sources=[spec], out=out, plots=False, deid_secret=b"k"), progress=False,
                  log=lambda _: None)
        [reject] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
        assert "DOE_JOHN" not in json.dumps(reject) and reject["ref"].startswith(f"{kind}-"), reject
