"""The build: accounting, determinism, worker-count independence, resume, leakage, Parquet, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import gmai.data.sources as sources
from gmai.data.build import BuildConfig, BuildInterrupted, SourceSpec, load_config_file, output_ref, run_build
from gmai.data.records import Box, MaskFacts, Record, Reject

VQA_RAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "vqa-rad"
LABELS = ["benign", "malignant", "normal"]


# ------------------------------------------------------------------------------------------------
# A source made of constructed records, registered for the tests only


def textured(seed: int, size: int = 64) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.kron(base, np.ones((-(-size // 8),) * 2, dtype=np.uint8))[:size, :size]


def _fake_items(path: Path, options: dict[str, str]) -> list[tuple[str, int]]:
    return [("case", i) for i in range(int(options.get("n", "30")))]


def _fake_load(path: Path, item: tuple[str, int], options: dict[str, str]) -> list[Record | Reject]:
    _, i = item
    name = options.get("name", "fake")
    if i % 10 == 7:
        return [Reject(f"{path}/case{i}.png", name, "unreadable or truncated image (test)")]
    split = "test" if i % 6 == 5 else "train"
    common = dict(source=name, modality=["CT", "MR", "X-ray"][i % 3], split=split, label_set=LABELS,
                  department="radiology")
    label = LABELS[i % 3]
    image = textured(i)
    if i % 9 == 4:
        image = np.full((64, 64), 9, np.uint8)  # blank -> quality reject
    if i % 8 == 3:  # the previous item again under another name: exact duplicates
        return [Record(**{**r.__dict__, "ref": r.ref.replace(f"case{i - 1}", f"case{i}")})
                for r in _fake_load(path, ("case", i - 1), options)]
    out: list[Record | Reject] = []
    if i % 3 == 1:
        box = Box(label, 0.25, 0.25, 0.75, 0.6)
        out.append(Record(image=image, ref=f"{path}/case{i}.png", task="detection", labels=[label], boxes=[box],
                          **common))
    elif i % 3 == 2:
        facts = MaskFacts(label, Box(label, 0.1, 0.5, 0.4, 0.9), 0.08, (0.25, 0.7), "left lower", 1)
        out.append(Record(image=image, ref=f"{path}/case{i}.png", task="segmentation", labels=[label],
                          boxes=[facts.box], mask_facts=[facts], **common))
    else:
        out.append(Record(image=image, ref=f"{path}/case{i}.png", task="classification", labels=[label], **common))
    if i % 5 == 0:  # a second record from the same item (a volume's next slice)
        out.append(Record(image=textured(1000 + i), ref=f"{path}/case{i}.png#2", task="classification",
                          labels=[LABELS[(i + 1) % 3]], **common))
    return out


@pytest.fixture(autouse=True)
def fake_source(monkeypatch):
    monkeypatch.setitem(sources._MODULES, "fake", "fake")
    monkeypatch.setitem(sources._REGISTRY, "fake", sources.Source("fake", _fake_items, _fake_load))


SECRET = b"a fixed secret: tests map refs back"


def config(out: Path, n: int = 30, **kw) -> BuildConfig:
    kw.setdefault("plots", False)  # matplotlib text layout costs ~1.5 s a build; one test draws them
    kw.setdefault("deid_secret", SECRET)
    return BuildConfig(sources=[SourceSpec("fake", "/data/fake", {"n": str(n)})], out=out, **kw)


def out_ref(adapter_ref: str) -> str:
    """The ref the build writes for the fake adapter's ``adapter_ref`` (keyed with SECRET, #12)."""
    return output_ref(SECRET, SourceSpec("fake", "/data/fake"), adapter_ref)


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ------------------------------------------------------------------------------------------------


def test_build_writes_the_layout_and_accounts_for_every_input(tmp_path):
    out = tmp_path / "out"
    result = run_build(config(out, plots=True), progress=False, log=lambda _: None)
    # count the adapter's outputs independently of the build
    produced = [x for i in range(30) for x in _fake_load(Path("/data/fake"), ("case", i), {})]
    n_records = sum(isinstance(x, Record) for x in produced)
    n_read_rejects = len(produced) - n_records
    rejects = jsonl(out / "rejects.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["inputs"] == len(produced) and stats["records_loaded"] == n_records
    assert stats["records_kept"] + len(rejects) == len(produced) and stats["accounting_ok"]
    stages = [r["stage"] for r in rejects]
    assert stages.count("read") == n_read_rejects == 3
    assert stages.count("quality") == 3 and all("blank image" in r["reason"] for r in rejects if r["stage"] == "quality")
    dups = sum(isinstance(x, Record) for i in range(30) if i % 8 == 3 and i % 10 != 7
               for x in _fake_load(Path("/data/fake"), ("case", i - 1), {}))
    assert dups == 4 and stages.count("dedup") == dups and all("exact duplicate" in r["reason"] for r in rejects if r["stage"] == "dedup")
    # every kept record has samples, every sample an image that exists
    rows = [r for f in sorted(out.glob("*.jsonl")) if f.name != "rejects.jsonl" for r in jsonl(f)]
    held = [r for f in sorted((out / "heldout").rglob("*.jsonl")) for r in jsonl(f)]
    assert {r["split"] for r in rows} == {"train"} and {r["split"] for r in held} == {"test"}
    assert len(rows) + len(held) == stats["samples"]
    assert {r["ref"] for r in rows + held} == {out_ref(x.ref) for x in produced if isinstance(x, Record)} - {
        r["ref"] for r in rejects}
    for row in rows + held:
        assert (out / row["image"]).is_file() and row["conversations"][0]["value"].startswith("<image>\n")
        assert row["id"].split("#")[0] == "2d" and row["id"].split("#")[1] in ("cls", "det", "seg")
    assert len({r["id"] for r in rows + held}) == len(rows + held)
    referenced = {r["image"] for r in rows + held}
    assert {str(p.relative_to(out)) for p in (out / "images").rglob("*.png")} == referenced  # no orphans
    card = (out / "README.md").read_text()
    for words in ("Records by modality", "Records by department", "Records by source task", "Samples by subset",
                  "Template usage", "Rejects", "Leakage check", "heldout/<split>/<subset>.jsonl"):
        assert words in card
    assert (out / "plots" / "distributions.png").is_file() and not (out / ".build").exists()
    assert result.records_read == n_records


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    a = tree(run_build(config(tmp_path / "a"), progress=False, log=lambda _: None).out)
    b = tree(run_build(config(tmp_path / "b"), progress=False, log=lambda _: None).out)
    c = tree(run_build(config(tmp_path / "c", seed=1), progress=False, log=lambda _: None).out)
    assert a == b
    assert a["MM-Caption.jsonl"] != c["MM-Caption.jsonl"]
    assert {k for k in a if k.startswith("images/")} == {k for k in c if k.startswith("images/")}


def test_the_same_source_elsewhere_gets_the_same_texts(tmp_path):
    def texts(source_path: str, out: Path) -> list:
        cfg = BuildConfig(sources=[SourceSpec("fake", source_path, {"n": "30"})], out=out, plots=False)
        run_build(cfg, progress=False, log=lambda _: None)
        return [row["conversations"] for row in jsonl(out / "MM-Instruct.jsonl")]

    assert texts("/data/fake", tmp_path / "a") == texts("/mnt/elsewhere/fake", tmp_path / "b")


def test_one_and_two_workers_are_byte_identical(tmp_path):
    one = tree(run_build(config(tmp_path / "w1", n=60, plots=True), progress=False, log=lambda _: None).out)
    two = tree(run_build(config(tmp_path / "w2", n=60, workers=2, plots=True), progress=False, log=lambda _: None).out)
    assert "plots/distributions.png" in two  # drawn in a side process with 2 workers, inline with 1
    assert one.keys() == two.keys() and one == two


def test_resume_after_a_kill_neither_loses_nor_duplicates(tmp_path):
    reference = tree(run_build(config(tmp_path / "ref", n=60), progress=False, log=lambda _: None).out)
    out = tmp_path / "killed"
    with pytest.raises(BuildInterrupted):
        run_build(config(out, n=60), progress=False, stop_after_chunks=5, log=lambda _: None)
    parts = sorted((out / ".build" / "parts").glob("*.pkl"))
    assert len(parts) == 5 and not (out / "MM-Caption.jsonl").exists()
    (out / "images" / "fake" / ".half-written.png.123.tmp").write_bytes(b"junk")  # debris of a real kill
    resumed = run_build(config(out, n=60, workers=2), progress=False, log=lambda _: None)
    assert resumed.chunks_reused == 5 and resumed.chunks_total > 5
    assert tree(out) == reference
    (out / "images" / "notes.txt").write_text("a file of the user's")  # never deleted: not ours
    run_build(config(out, n=60), progress=False, log=lambda _: None)
    assert (out / "images" / "notes.txt").is_file()


def test_rebuild_into_the_same_folder_with_other_image_settings(tmp_path):
    out = tmp_path / "out"
    run_build(config(out, max_side=32), progress=False, log=lambda _: None)
    run_build(config(out), progress=False, log=lambda _: None)
    assert tree(out) == tree(run_build(config(tmp_path / "fresh"), progress=False, log=lambda _: None).out)


def test_changed_inputs_do_not_reuse_old_parts(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BuildInterrupted):
        run_build(config(out, n=60), progress=False, stop_after_chunks=3, log=lambda _: None)
    result = run_build(config(out, n=60, seed=5), progress=False, log=lambda _: None)
    assert result.chunks_reused == 0


def test_leakage_excludes_exactly_the_overlapping_training_images(tmp_path):
    bench = tmp_path / "benchmark"
    bench.mkdir()
    overlap_train, overlap_test = [1, 6, 14], [5]  # case 5 is a test-split record: it stays held out
    for i in overlap_train + overlap_test:
        Image.fromarray(textured(i)).save(bench / f"b{i}.png")
    Image.fromarray(textured(999)).save(bench / "unrelated.png")
    out = tmp_path / "out"
    run_build(config(out, exclude_benchmarks=[str(bench)]), progress=False, log=lambda _: None)
    leaks = [r for r in jsonl(out / "rejects.jsonl") if r["stage"] == "leakage"]
    assert sorted(r["ref"] for r in leaks) == sorted(out_ref(f"/data/fake/case{i}.png") for i in overlap_train)
    assert all(r["reason"].startswith("matches benchmark image benchmark/b") for r in leaks)  # benchmark-relative
    kept_refs = {r["ref"] for f in out.rglob("*.jsonl") if f.name != "rejects.jsonl" for r in jsonl(f)}
    assert out_ref("/data/fake/case5.png") in kept_refs
    assert not kept_refs & {out_ref(f"/data/fake/case{i}.png") for i in overlap_train}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["leakage"]["excluded"] == 3 and stats["leakage"]["benchmark_images"] == 5
    assert stats["leakage"]["folders"] == ["benchmark"]  # the folder's name, not its path
    assert "**3 training records excluded**" in (out / "README.md").read_text()


def test_parquet_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    out = tmp_path / "out"
    run_build(config(out), progress=False, log=lambda _: None)
    for subset in ("MM-Caption", "MM-Instruct", "MM-Percept"):
        files = sorted(str(p) for p in (out / "parquet" / subset).glob("train-*.parquet"))
        ds = load_dataset("parquet", data_files=files, split="train")
        rows = jsonl(out / f"{subset}.jsonl")
        assert len(ds) == len(rows) and ds[0]["id"] == rows[0]["id"]
        assert ds[0]["conversations"] == rows[0]["conversations"]
        image = ds[0]["image"]
        assert image.size[0] > 0 and np.array_equal(np.asarray(image), np.asarray(Image.open(out / rows[0]["image"])))
    by_config = load_dataset(str(out), "MM-Caption")  # the card's `configs` front matter
    assert set(by_config) == {"train", "test"}


def test_cli_build_and_exit_codes(tmp_path):
    from gmai.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["data", "build", "--source", "fake:/data/fake?n=12", "--out", str(tmp_path / "o"),
                             "-q", "-w", "2", "--no-plots"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "o" / "MM-Caption.jsonl").is_file()
    nothing = runner.invoke(app, ["data", "build", "--source", "npz:/no/such/file.npz", "--out", str(tmp_path / "n"),
                                  "-q", "--no-plots"])
    assert nothing.exit_code == 1 and "nothing could be read" in nothing.output
    rejects = jsonl(tmp_path / "n" / "rejects.jsonl")
    assert len(rejects) == 1 and "/no/such" not in json.dumps(rejects)  # no input path in any output (#12)
    bad = runner.invoke(app, ["data", "build", "--source", "nosuchkind:/x", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0
    np.savez(tmp_path / "t.npz", train_images=np.zeros((2, 32, 32), np.uint8), train_labels=np.zeros(2, int))
    typo = runner.invoke(app, ["data", "build", "--source", f"npz:{tmp_path / 't.npz'}?classes=a,b&limit=many",
                               "--out", str(tmp_path / "t"), "-q", "--no-plots"])
    assert typo.exit_code == 2 and "limit" in typo.output


def test_yaml_config(tmp_path):
    cfg = tmp_path / "build.yaml"
    cfg.write_text("sources:\n  - kind: fake\n    path: /data/fake\n    options: {n: 5, name: yamlset}\n"
                   "  - fake:/data/other?n=3\nseed: 3\n")
    data = load_config_file(cfg)
    assert data["sources"] == [SourceSpec("fake", "/data/fake", {"n": "5", "name": "yamlset"}),
                               SourceSpec("fake", "/data/other", {"n": "3"})]
    from gmai.cli import app

    result = CliRunner().invoke(app, ["data", "build", "--config", str(cfg), "--out", str(tmp_path / "o"), "-q", "--no-plots"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["seed"] == 3 and "yamlset" in stats["records_by_source"]
    cfg.write_text("sources: [fake:/data/fake]\nworkerz: 2\n")
    with pytest.raises(ValueError, match="workerz"):
        load_config_file(cfg)


# ------------------------------------------------------------------------------------------------
# End to end on real data


def _medmnist_npz(path: Path) -> None:
    rng = np.random.default_rng(0)

    def images(n):
        return np.stack([textured(int(s), 28) ^ rng.integers(0, 40, (28, 28), dtype=np.uint8)
                         for s in rng.integers(0, 10**6, n)])

    np.savez(path, train_images=images(40), train_labels=rng.integers(0, 2, (40, 1)),
             val_images=images(8), val_labels=rng.integers(0, 2, (8, 1)),
             test_images=images(10), test_labels=rng.integers(0, 2, (10,)))


@pytest.mark.slow
@pytest.mark.skipif(not (VQA_RAD / "trainset.json").is_file(), reason="VQA-RAD not present in ../shared/data")
def test_vqa_rad_and_npz_end_to_end_with_leakage_against_vqa_rad_test(tmp_path):
    from datasets import load_dataset

    train = json.loads((VQA_RAD / "trainset.json").read_text())
    test = json.loads((VQA_RAD / "testset.json").read_text())
    train_images = {q["image_name"] for q in train}
    test_images = {q["image_name"] for q in test}
    overlap = train_images & test_images  # VQA-RAD's public split shares images between train and test
    bench = tmp_path / "vqa-rad-test-images"
    bench.mkdir()
    for name in sorted(test_images):
        os.symlink(VQA_RAD / "images" / name, bench / name)
    npz = tmp_path / "breast.npz"
    _medmnist_npz(npz)
    out = tmp_path / "out"
    vqa = SourceSpec.parse(f"vqa-rad:{VQA_RAD}")
    result = run_build(BuildConfig(
        sources=[vqa, SourceSpec.parse(f"npz:{npz}?classes=malignant,benign&modality=ultrasound&name=breastmnist")],
        out=out, workers=2, exclude_benchmarks=[str(bench)], deid_secret=SECRET), progress=False, log=lambda _: None)
    # refs are keyed hashes (#12): map them back to image names the way a user who keeps the secret would
    names = {output_ref(SECRET, vqa, str(VQA_RAD / "images" / n)): n for n in train_images | test_images}
    rejects = jsonl(out / "rejects.jsonl")
    leaked = {names[r["ref"]] for r in rejects if r["stage"] == "leakage"}
    assert leaked == overlap and len(overlap) > 0
    assert sum(r["stage"] == "leakage" for r in rejects) == len(overlap)
    train_rows = [r for s in ("MM-Caption", "MM-Instruct", "MM-Percept") for r in jsonl(out / f"{s}.jsonl")]
    vqa_train = {names[r["ref"]] for r in train_rows if r["source"] == "vqa-rad"}
    assert vqa_train == train_images - test_images
    assert sum(r["format"] == "vqa" for r in train_rows) == sum(q["image_name"] not in test_images for q in train)
    held = [r for f in (out / "heldout").rglob("*.jsonl") for r in jsonl(f)]
    assert {names[r["ref"]] for r in held if r["source"] == "vqa-rad"} == test_images
    assert sum(r["format"] == "vqa" and r["source"] == "vqa-rad" for r in held) == len(test)
    closed = [r for r in held if r["source"] == "vqa-rad" and r["answer_type"] == "closed"]
    assert len(closed) == sum(q["answer_type"].strip() == "CLOSED" for q in test)
    assert {r["split"] for r in held if r["source"] == "breastmnist"} == {"val", "test"}
    assert sum(r["source"] == "breastmnist" and r["format"] == "caption" for r in train_rows) == 40
    for subset in ("MM-Instruct", "MM-Caption"):
        ds = load_dataset("parquet", data_dir=str(out / "parquet" / subset))
        assert len(ds["train"]) == len(jsonl(out / f"{subset}.jsonl"))
    assert result.stats["accounting_ok"] and result.stats["leakage"]["excluded"] == len(overlap)


def test_dicom_identifiers_never_reach_any_output_file(tmp_path):
    from gmai.data import imaging

    secrets = {"PatientName": "ROE^RICHARD^Q", "PatientID": "MRN-778899", "PatientBirthDate": "19580607",
               "StudyDate": "20230405", "InstitutionName": "Mercy Imaging Center", "AccessionNumber": "A55501",
               "ReferringPhysicianName": "HOUSE^GREGORY", "StudyInstanceUID": "1.2.826.0.1.3680043.99.1"}
    data = tmp_path / "dicom"
    for k in range(4):
        pixels = np.random.default_rng(k).integers(0, 2000, (48, 48)).astype(np.uint16)
        extra = {"BurnedInAnnotation": "YES"} if k == 3 else {}
        imaging.write_dicom(data / "series" / f"s{k}.dcm", pixels, {
            "Modality": "CT", "RescaleIntercept": -1024, "RescaleSlope": 1, "InstanceNumber": k + 1,
            **secrets, **extra})
    out = tmp_path / "out"
    result = run_build(BuildConfig(sources=[SourceSpec.parse(f"dicom:{data}?name=toy-dicom")], out=out, plots=True),
                       progress=False, log=lambda _: None)
    assert result.stats["records_kept"] == 3 and result.stats["rejects"] == 1  # the burned-in file
    needles = [v.encode() for v in secrets.values()] + [b"RICHARD", b"GREGORY", b"Mercy", b"3680043.99.1"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle not in blob, f"{needle!r} found in {path}"


@pytest.mark.slow
def test_resume_after_a_real_sigkill(tmp_path):
    """Kill the CLI process for real mid-build (no cooperation), resume, compare with an uninterrupted build."""
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "folder"
    for i in range(900):
        label = ("benign", "malignant", "normal")[i % 3]
        (data / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured(i, 96)).save(data / label / f"img{i:04d}.png")
    spec = f"imagefolder:{data}?modality=ultrasound&name=kill-test"

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "gmai.cli", "data", "build", "--source", spec, "--out", str(out), "-q",
                "--no-plots", "--deid-secret-file", str(tmp_path / "secret.hex")]  # refs are keyed with it (#12)

    reference = tmp_path / "reference"
    subprocess.run(command(reference), check=True, capture_output=True)
    out = tmp_path / "killed"
    process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / ".build" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("*.pkl"))) < 8 and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = len(list(parts.glob("*.pkl")))
    assert 8 <= committed < 64, f"kill came too late or too early ({committed} parts)"
    assert not (out / "stats.json").exists()
    resumed = subprocess.run(command(out), check=True, capture_output=True, text=True)
    assert f"resuming: {committed} of" in resumed.stdout
    assert tree(out) == tree(reference)
