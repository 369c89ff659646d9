"""``gmai data build --engine ray``: the same records as the local engine, on one node and on a real 2-node cluster.

Every Ray test starts (and stops) its own cluster, so they are in the slow tier; the one-line errors are fast.
The 2-node cluster is two ``ray start`` processes on this machine (head + a second node joining it), each
with its own CPU, temp dir and ports; the teardown kills exactly the processes started for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gmai.cli import app
from gmai.data.build import BuildConfig, SourceSpec, output_ref, run_build

ray = pytest.importorskip("ray")

SRC = Path(__file__).resolve().parents[2] / "src"
RAY_BIN = Path(sys.executable).parent / "ray"


# ------------------------------------------------------------------------------------------------
# Inputs: a MedMNIST-layout npz, a DICOM series, an image folder repeating some of their pictures


def textured(seed: int, size: int = 64) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.kron(base, np.ones((-(-size // 8),) * 2, dtype=np.uint8))[:size, :size]


def medmnist_npz(path: Path) -> np.ndarray:
    """The MedMNIST .npz layout ({train,val,test}_{images,labels}, uint8 28x28, labels (n, 1)), as released by
    MedMNIST v2 (github.com/MedMNIST/MedMNIST, medmnist/dataset.py reads `f"{split}_images"` / `f"{split}_labels"`).
    Synthetic pixels. Returns the training images."""
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return np.stack([textured(int(s), 28) ^ rng.integers(0, 40, (28, 28), dtype=np.uint8)
                         for s in rng.integers(0, 10**6, n)])

    train = images(40)
    np.savez(path, train_images=train, train_labels=rng.integers(0, 2, (40, 1)), val_images=images(8),
             val_labels=rng.integers(0, 2, (8, 1)), test_images=images(10), test_labels=rng.integers(0, 2, (10, 1)))
    return train


def dicom_series(folder: Path, count: int = 6) -> None:
    from gmai.data import imaging

    for k in range(count):
        pixels = np.random.default_rng(k).integers(0, 2000, (48, 48)).astype(np.uint16)
        imaging.write_dicom(folder / f"s{k}.dcm", pixels, {
            "Modality": "CT", "RescaleIntercept": -1024, "RescaleSlope": 1, "InstanceNumber": k + 1,
            "PatientName": "ROE^RICHARD", "PatientID": "MRN-1"})


def repeat_folder(folder: Path, train: np.ndarray, count: int = 30) -> None:
    """One file per item (so repeats land in other chunks, i.e. other Ray partitions than their originals):
    exact copies of npz images, copies with light noise (near duplicates), and new pictures."""
    rng = np.random.default_rng(1)
    for i in range(count):
        label = ("benign", "malignant")[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            image = train[i]
        elif i % 3 == 1:
            image = np.clip(train[i].astype(int) + rng.integers(-2, 3, train[i].shape), 0, 255).astype(np.uint8)
        else:
            image = textured(5000 + i, 28)
        Image.fromarray(image).save(folder / label / f"img{i:03d}.png")


def benchmark_folder(folder: Path, train: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i in (2, 5, 11):
        Image.fromarray(train[i]).save(folder / f"bench{i}.png")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[list[SourceSpec], list[str]]:
    root = tmp_path_factory.mktemp("inputs")
    train = medmnist_npz(root / "breastmnist.npz")
    dicom_series(root / "dicom")
    repeat_folder(root / "folder", train)
    benchmark_folder(root / "bench", train)
    specs = [SourceSpec.parse(f"npz:{root / 'breastmnist.npz'}?classes=malignant,benign&modality=ultrasound"
                              "&name=breastmnist"),
             SourceSpec.parse(f"dicom:{root / 'dicom'}?name=toy-dicom"),
             SourceSpec.parse(f"imagefolder:{root / 'folder'}?modality=ultrasound&name=repeats")]
    return specs, [str(root / "bench")]


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def rows(out: Path) -> list[dict]:
    files = [f for f in sorted(out.rglob("*.jsonl")) if f.name != "rejects.jsonl"]  # the samples, train and held out
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line]


SECRET = b"one secret for both engines"


def build(specs: list[SourceSpec], bench: list[str], out: Path, log=lambda _: None, **kw) -> dict:
    kw.setdefault("plots", False)
    kw.setdefault("deid_secret", SECRET)  # refs (and DICOM UIDs) are keyed by it
    config = BuildConfig(sources=specs, out=out, exclude_benchmarks=bench, **kw)
    return run_build(config, progress=False, log=log).stats


@pytest.fixture(scope="module")
def local_reference(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    stats = build(*inputs, out, workers=2, plots=True)
    stages = stats["rejects_by_stage"]
    # the inputs exercise what must be global across partitions: both dedups and the leakage check
    assert stages.get("leakage") and stats["rejects_by_reason"].get("dedup: exact duplicate")
    assert stats["rejects_by_reason"].get("dedup: near duplicate")
    return out


# ------------------------------------------------------------------------------------------------
# Fast: what a user sees when Ray cannot run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_is_a_one_line_error(tmp_path):
    port = _free_port()  # nothing listens there
    npz = tmp_path / "x.npz"
    medmnist_npz(npz)
    result = CliRunner().invoke(app, ["data", "build", "--source", f"npz:{npz}?classes=a,b", "--out",
                                      str(tmp_path / "o"), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert f"error: cannot reach the Ray cluster at 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


def test_without_ray_installed_the_error_names_the_extra(tmp_path, monkeypatch):
    npz = tmp_path / "x.npz"
    medmnist_npz(npz)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is not installed
    result = CliRunner().invoke(app, ["data", "build", "--source", f"npz:{npz}?classes=a,b", "--out",
                                      str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2 and "error: --engine ray needs Ray Data: pip install 'gmai[ray]'" in result.output
    assert "Traceback" not in result.output


def test_yaml_config_selects_the_engine(tmp_path):
    port = _free_port()
    npz = tmp_path / "x.npz"
    medmnist_npz(npz)
    config = tmp_path / "build.yaml"
    config.write_text(f"sources: ['npz:{npz}?classes=a,b']\nengine: ray\nray_address: 127.0.0.1:{port}\n")
    result = CliRunner().invoke(app, ["data", "build", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in result.output
    bad = CliRunner().invoke(app, ["data", "build", "--source", f"npz:{npz}", "--out", str(tmp_path / "o"),
                                   "--engine", "spark"])
    assert bad.exit_code == 2 and "spark" in bad.output


# ------------------------------------------------------------------------------------------------
# One local Ray cluster (2 CPUs), started by the engine itself


@pytest.mark.slow
def test_ray_engine_writes_the_same_outputs_as_the_local_engine(inputs, local_reference, tmp_path):
    out = tmp_path / "ray"
    lines: list[str] = []
    build(*inputs, out, workers=2, plots=True, engine="ray", log=lines.append)
    assert "ray engine: 2 CPUs on 1 node(s) (local cluster)" in lines  # --workers CPUs, started by the engine
    assert not ray.is_initialized()  # and shut down by it
    reference, ours = tree(local_reference), tree(out)
    assert sorted(ours) == sorted(reference)
    assert [k for k in reference if reference[k] != ours[k]] == []  # JSONL, Parquet, rejects, stats, card, plots
    assert {r["source"] for r in rows(out)} == {"breastmnist", "toy-dicom", "repeats"}


# A source that kills its worker process on one file: registered in every Ray worker by a setup hook.
CRASH_FILE = "img004.png"


def _crashing_load(path, item, options):
    from gmai.data.sources import get_source

    if item[-1].endswith(CRASH_FILE) if isinstance(item, tuple) else str(item).endswith(CRASH_FILE):
        os._exit(3)  # what a segfaulting decoder does: no exception, the process is gone
    return get_source("imagefolder").load(path, item, options)


def _register_crashing_source() -> None:
    import gmai.data.sources as sources

    base = sources.get_source("imagefolder")
    sources._MODULES["crashy"] = "imagefolder"
    sources._REGISTRY["crashy"] = sources.Source("crashy", base.items, _crashing_load)


@pytest.mark.slow
def test_a_worker_crash_on_one_file_rejects_that_file_and_the_build_goes_on(inputs, tmp_path, monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hook travels to the workers
    _register_crashing_source()  # and the driver lists the items with it
    folder = Path(inputs[0][2].path)
    spec = SourceSpec.parse(f"crashy:{folder}?modality=ultrasound&name=repeats")
    ray.init(num_cpus=2, object_store_memory=128 << 20, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _register_crashing_source})
    try:
        stats = build([spec], [], tmp_path / "out", workers=2, engine="ray")
    finally:
        ray.shutdown()
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    # refs are keyed hashes (#12): map them back to file names the way a user who keeps the secret would
    from gmai.data.sources import get_source

    items = get_source("imagefolder").items(folder, spec.options)
    names = {output_ref(SECRET, spec, str(folder / item[-1])): Path(item[-1]).name for item in items}
    crash = next(output_ref(SECRET, spec, f"item {item!r}") for item in items if item[-1].endswith(CRASH_FILE))
    crashed = [r for r in rejects if r["ref"] == crash]
    assert len(crashed) == 1 and crashed[0]["stage"] == "read" and "worker failed on this item" in crashed[0]["reason"]
    files = sorted(p.name for p in folder.rglob("*.png"))
    kept = {names[r["ref"]] for r in rows(tmp_path / "out")}
    others = {names[r["ref"]] for r in rejects if r["ref"] != crash}
    # every other file is converted or rejected for its own reason
    assert kept | others | {CRASH_FILE} == set(files) and CRASH_FILE not in kept | others
    assert stats["accounting_ok"] and stats["inputs"] == len(files)


# ------------------------------------------------------------------------------------------------
# A real 2-node cluster on this machine


def _our_processes(marker: str) -> list[int]:
    """Pids whose command line names this cluster's own temp dir (never another user's Ray)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class TwoNodes:
    """``ray start --head --num-cpus 1`` and a second ``ray start --address=... --num-cpus 1``, own ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # token auth as Ray 2.60 defaults to, with this cluster's own token for its nodes and drivers
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.head_dir, self.worker_dir = root / "head", root / "n0"
        self.restarts = 0

    def _start(self, args: list[str], temp_dir: Path, ports: int) -> None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        own_ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port",
                     "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"]
        base = [str(RAY_BIN), "start", "--num-cpus", "1", "--temp-dir", str(temp_dir), "--disable-usage-stats",
                "--object-store-memory", str(100 << 20), "--node-ip-address", "127.0.0.1",
                "--min-worker-port", str(ports), "--max-worker-port", str(ports + 99)]
        for option in own_ports:
            base += [option, str(_free_port())]
        done = subprocess.run(base + args, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"ray start {args[0]} failed:\n{done.stderr[-3000:]}"

    def start(self) -> None:
        self._start(["--head", "--port", str(self.port), "--include-dashboard", "false", "--dashboard-port",
                     str(_free_port())], self.head_dir, 21000)
        self.ensure_second_node()

    def ensure_second_node(self) -> None:
        if self.alive_nodes() == 2:
            return
        self.restarts += 1
        self.worker_dir = self.root / f"n{self.restarts}"  # a fresh node, never the killed one's dir
        self._start(["--address", self.address], self.worker_dir, 22000 + 100 * self.restarts)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.alive_nodes() < 2:
            time.sleep(0.5)
        assert self.alive_nodes() == 2

    def alive_nodes(self) -> int:
        out = subprocess.run([str(RAY_BIN), "status", "--address", self.address], env=self.env,
                             capture_output=True, text=True, timeout=60).stdout
        active = out.split("Active:")[1].split("Pending:")[0] if "Active:" in out else ""
        return active.count("node_")

    def kill_second_node(self) -> None:
        ours = _our_processes(str(self.worker_dir))
        raylets = [p for p in ours if b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert raylets, "the second node's raylet is not running"
        _kill(raylets)

    def stop(self) -> None:
        _kill(_our_processes(str(self.root)))


@pytest.fixture(scope="module")
def cluster_of_two():
    root = Path(tempfile.mkdtemp(prefix="gmai-ray-"))  # short: Ray's socket paths must stay under 108 bytes
    nodes = TwoNodes(root)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def two_nodes(cluster_of_two):
    """The module's cluster (one start for both fault tests), with its second node back if a test killed it."""
    cluster_of_two.ensure_second_node()
    return cluster_of_two


def _folder_of_images(folder: Path, count: int, size: int = 96) -> str:
    for i in range(count):
        label = ("benign", "malignant", "normal")[i % 3]
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(textured(i, size)).save(folder / label / f"img{i:04d}.png")
    return f"imagefolder:{folder}?modality=ultrasound&name=fault-test"


def _cli(spec: str, out: Path, *extra: str) -> list[str]:
    # one kept secret for every build of a test (its outputs side by side): the refs are keyed with it (#12)
    return [sys.executable, "-m", "gmai.cli", "data", "build", "--source", spec, "--out", str(out), "-q",
            "--no-plots", "--deid-secret-file", str(out.parent / "deid-secret.hex"), *extra]


def _parts(out: Path) -> list[Path]:
    return sorted((out / ".build" / "parts").glob("*.pkl"))


def _wait_for_parts(out: Path, count: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(_parts(out)) < count and process.poll() is None:
        time.sleep(0.05)


@pytest.mark.slow
def test_two_node_cluster_same_output_and_worker_node_killed_mid_build(two_nodes, tmp_path):
    """Build 1: the 2-node cluster gives the local engine's output. Build 2: the second node's raylet is
    SIGKILLed mid-build; the build still completes, with nothing lost and nothing duplicated."""
    spec = _folder_of_images(tmp_path / "data", 600)
    env = two_nodes.env
    reference = tmp_path / "local"
    subprocess.run(_cli(spec, reference), check=True, capture_output=True, env=env)
    cluster = ("--engine", "ray", "--ray-address", two_nodes.address)
    same = tmp_path / "cluster"
    done = subprocess.run(_cli(spec, same, *cluster), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray engine: 2 CPUs on 2 node(s)" in done.stdout
    assert tree(same) == tree(reference)

    killed = tmp_path / "node-killed"
    process = subprocess.Popen(_cli(spec, killed, *cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    _wait_for_parts(killed, 8, process)
    assert process.poll() is None and len(_parts(killed)) < 60  # mid-build (600 items: 60 chunks of 10)
    two_nodes.kill_second_node()
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    deadline = time.monotonic() + 90  # the head marks a node dead only after its health checks fail
    while two_nodes.alive_nodes() != 1 and time.monotonic() < deadline:
        time.sleep(2)
    assert two_nodes.alive_nodes() == 1  # the node really went away
    assert tree(killed) == tree(reference)  # every record once, same ids: nothing lost, nothing duplicated


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_chunks(two_nodes, tmp_path):
    spec = _folder_of_images(tmp_path / "data", 600)
    env = two_nodes.env
    reference = tmp_path / "local"
    subprocess.run(_cli(spec, reference), check=True, capture_output=True, env=env)
    out = tmp_path / "out"
    command = _cli(spec, out, "--engine", "ray", "--ray-address", two_nodes.address, "--keep-journal")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _wait_for_parts(out, 8, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    settled = None  # the killed job's tasks are stopped by Ray; wait until no part comes in any more
    while settled != (parts := _parts(out)):
        settled = parts
        time.sleep(2)
    finished = {p.name: p.stat().st_mtime_ns for p in settled}
    assert 8 <= len(finished) < 60, f"kill came too late or too early ({len(finished)} parts)"
    assert not (out / "stats.json").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {len(finished)} of 60 chunks already committed" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in _parts(out) if p.name in finished} == finished  # not redone
    assert {k: v for k, v in tree(out).items() if not k.startswith(".build")} == tree(reference)
