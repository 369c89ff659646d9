"""The benchmark scripts' shared measuring rules (benchmarks/measure.py) and their fairness helpers."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import measure  # noqa: E402


def test_cpu_seconds_count_a_finished_child_process():
    before = measure.cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert measure.cpu_seconds() - before > 0.05  # the child's CPU, counted once it has been waited for


def test_server_cpu_seconds_count_a_live_worker_child():
    """A "server" that sleeps while its worker child computes: the worker's CPU counts for the server."""
    import time

    psutil = pytest.importorskip("psutil")
    worker = "sum(i * i for i in range(6_000_000)); import time; time.sleep(30)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); time.sleep(30)"
    server = subprocess.Popen([sys.executable, "-c", code])
    try:
        def children_share() -> float:
            own = psutil.Process(server.pid).cpu_times()
            return measure.server_cpu_seconds(server.pid) - (own.user + own.system)

        deadline = time.monotonic() + 20
        while children_share() < 0.2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children_share() >= 0.2  # the worker's CPU, counted while it is alive
    finally:
        for child in psutil.Process(server.pid).children(recursive=True):
            child.kill()
        server.kill()
        server.wait()


SPIN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n{then}"


def _wait_for(condition, seconds: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert condition()


def test_a_process_outside_the_benchmark_makes_the_machine_busy(tmp_path):
    """An unrelated process (orphaned, so not our child) that spins 1.5 CPU s while the benchmark sleeps is the
    neighbours' CPU, and the note says BUSY."""
    done = tmp_path / "done"
    start = measure._snapshot()
    code = SPIN.format(s=1.5, then=f"open({str(done)!r}, 'w').close()")
    subprocess.run(["sh", "-c", f'{sys.executable} -c "{code}" >/dev/null 2>&1 &'], check=True)
    _wait_for(done.exists)
    others = measure.neighbour_cpu(start)
    assert others["others_cpu_s"] >= 1.4, others
    assert measure.machine(start)["note"].startswith("BUSY machine: other processes used")


def test_the_benchmarks_own_children_are_not_neighbours():
    """A 2-thread benchmark alone made a 1-min load of ~1.1-1.5 on 2 CPUs and was flagged BUSY (2026-12-05): its
    own CPU, finished children and live ones included, must not count as the neighbours'."""
    psutil = pytest.importorskip("psutil")
    start = measure._snapshot()
    live = subprocess.Popen([sys.executable, "-c", SPIN.format(s=1.2, then="time.sleep(60)")])
    try:
        subprocess.run([sys.executable, "-c", SPIN.format(s=1.2, then="")], check=True)  # a finished child
        _wait_for(lambda: sum(psutil.Process(live.pid).cpu_times()[:2]) >= 1.2)
        others = measure.neighbour_cpu(start)["others_cpu_s"]
        busy = measure.machine_busy_seconds() - start[1]
    finally:
        live.kill()
        live.wait()
    # others = machine busy - own; own holds both children's 2.4 s, whatever else the machine runs meanwhile
    assert others <= busy - 2.0 + 0.1, (others, busy)


def test_rounds_run_every_setting_each_round_in_rotating_order():
    calls = []
    runs = measure.interleaved_rounds(["a", "b", "c"], 3, lambda s, r: calls.append((r, s)) or {"x": r})
    assert calls == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"), (2, "c"), (2, "a"), (2, "b")]
    assert [r["round"] for r in runs["b"]] == [0, 1, 2] and len(runs["a"][0]["load_avg"]) == 3
    assert measure.median_of(runs["a"], "x") == 1


def test_data_engine_takes_wall_and_cpu_from_the_same_round():
    pytest.importorskip("nibabel")
    import data_engine

    # round 2 has the least wall time, round 1 the least CPU: both numbers must come from round 2
    assert data_engine.fastest([(3.0, 10, 2.0), (2.5, 10, 1.0), (2.0, 10, 1.5)]) == (2.0, 10, 1.5)


def test_trl_best_batch_gives_the_step_count_closest_to_gmais():
    import math

    import train_throughput

    for samples, steps in ((480, 28), (480, 60), (100, 7), (24, 1)):
        batch = train_throughput.batch_for_steps(samples, steps)
        best = min(abs(math.ceil(samples / b) - steps) for b in range(1, samples + 1))
        assert abs(math.ceil(samples / batch) - steps) == best


def test_every_benchmark_reads_cpu_time_through_measure_only():
    """One definition of CPU seconds: no benchmark script reads the clock of its own process or of its children
    except through benchmarks/measure.py (a second definition once counted finished children and another did
    not)."""
    import re

    own_clocks = re.compile(r"process_time|thread_time|ru_utime|ru_stime|RUSAGE_CHILDREN|os\.times\(|\.cpu_times\(")
    offenders = [f"{path.name}:{n}" for path in sorted(BENCHMARKS.glob("*.py")) if path.name != "measure.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if own_clocks.search(line)]
    assert offenders == []
    users = [p.name for p in BENCHMARKS.glob("*.py") if re.search(r"\bcpu_seconds\(", p.read_text())]
    assert {"data_engine.py", "grpo_step.py", "measure.py"} <= set(users)


def test_data_engine_bare_loop_writes_the_slices_the_engine_kept(tmp_path):
    """Record refs are keyed (no slice index leaves the engine): the bare loop finds the kept slices by pixels."""
    pytest.importorskip("nibabel")
    import data_engine

    data_engine.make_volumes(tmp_path / "data", 2, 64, 8)
    _, records, _ = data_engine.run_engine(tmp_path / "data", tmp_path / "out", 1, 1, False)
    kept = data_engine.kept_slices(tmp_path / "out", tmp_path / "data")
    images = {p.name for p in (tmp_path / "out" / "images").rglob("*.png")}
    assert sum(map(len, kept.values())) == len(images) > 0
    _, written, _ = data_engine.run_bare(kept, tmp_path / "bare", 1, 1)
    assert written == len(images) == len(list((tmp_path / "bare").glob("*.png")))
