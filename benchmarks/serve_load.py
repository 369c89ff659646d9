"""Serving under load: dynamic batching vs one request per generate call, on loopback.

Two runs of the real server (`gmai serve`, a child process): the same checkpoint, the same 500
requests (a 64x64 PNG as a base64 data URL + a question, greedy, ``max_tokens`` capped) from 16
concurrent clients; once with dynamic batching on and once with ``--no-batching``. Reported per
run: errors (5xx and any other non-200), p50/p99 latency, requests/s, and the server's CPU seconds
(the server process and its live worker processes: benchmarks/measure.py). The two modes run in
--rounds interleaved rounds (order rotating); the speedup is the ratio of the medians. Target:
>= 2x requests/s with batching on, 0 server errors.

    python benchmarks/serve_load.py [--requests 500] [--clients 16] [--max-tokens 16] [--rounds 3] [--checkpoint DIR]

The model is the ``tiny`` preset with random weights (synthetic; a trained checkpoint can be given
with --checkpoint). Replies are gibberish, so the max_tokens cap is what bounds generation on both
sides equally. Each run is bounded by --run-timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from measure import interleaved_rounds, server_cpu_seconds  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def make_checkpoint(out: Path) -> Path:
    import inspect
    import json as json_module
    import textwrap

    from gmai.model import create_model, save_checkpoint

    corpus = [line for m in (json_module, textwrap) for line in inspect.getsource(m).splitlines() if line.strip()]
    model, processor = create_model("tiny", corpus=corpus, seed=0)
    return save_checkpoint(model, processor, out / "tiny")


def request_bodies(n: int, max_tokens: int, model: str) -> list[dict]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    urls = []
    for _ in range(8):  # 8 distinct synthetic images, reused round-robin
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    questions = ["What modality is this?", "Is there a lesion?", "Which organ is shown?", "Describe the image."]
    return [{"model": model, "max_tokens": max_tokens, "temperature": 0,
             "messages": [{"role": "user", "content": [
                 {"type": "image_url", "image_url": {"url": urls[i % len(urls)]}},
                 {"type": "text", "text": questions[i % len(questions)]}]}]}
            for i in range(n)]


async def drive(base_url: str, bodies: list[dict], clients: int, run_timeout: float) -> dict:
    import httpx

    latencies, statuses = [], []
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(http: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            start = time.perf_counter()
            try:
                response = await http.post(f"{base_url}/chat/completions", json=body)
                statuses.append(response.status_code)
            except httpx.HTTPError as err:
                statuses.append(type(err).__name__)
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(timeout=120, limits=limits, headers={"Authorization": f"Bearer {KEY}"}) as http:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(client_loop(http) for _ in range(clients))), run_timeout)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        wall = time.perf_counter() - start
    ok = sum(1 for s in statuses if s == 200)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    return {"requests": len(bodies), "completed": len(statuses), "ok": ok,
            "server_errors": sum(1 for s in statuses if isinstance(s, int) and s >= 500),
            "other_errors": sum(1 for s in statuses if s != 200 and not (isinstance(s, int) and s >= 500)),
            "timed_out": timed_out, "wall_s": round(wall, 3), "requests_per_s": round(ok / wall, 2),
            "p50_ms": round(1000 * pct(50), 1), "p99_ms": round(1000 * pct(99), 1),
            "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None}


def run_mode(checkpoint: Path, name: str, args: list[str], bodies: list[dict], clients: int,
             run_timeout: float, log_dir: Path, torch_threads: int) -> dict:
    import httpx

    from gmai.serve.process import ServerProcess

    with ServerProcess(checkpoint, api_key=KEY, args=[*args, "--log-level", "warning", "--torch-threads",
                                                       str(torch_threads)],
                       log_path=log_dir / f"server-{name}.log") as server:
        for body in bodies[:4]:  # warm-up, not timed
            httpx.post(server.base_url + "/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {KEY}"}).raise_for_status()
        def metrics() -> dict:  # counters need the key (/health without it says only "ok")
            return httpx.get(server.url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {KEY}"}).json()

        before = metrics()
        cpu_before = server_cpu_seconds(server.pid)
        result = asyncio.run(drive(server.base_url, bodies, clients, run_timeout))
        server_cpu = server_cpu_seconds(server.pid) - cpu_before
        after = metrics()
        # CPU seconds the server spent per answered request: robust to other load on a shared machine
        result["server_cpu_s"] = round(server_cpu, 2)
        result["server_cpu_ms_per_request"] = round(1000 * server_cpu / max(1, result["ok"]), 1)
        calls = after["generate_calls"] - before["generate_calls"]
        result["generate_calls"] = calls
        result["mean_batch"] = round((after["requests_generated"] - before["requests_generated"]) / max(1, calls), 2)
        result["server_args"] = args
    return result


def summarize(runs: list[dict]) -> dict:
    """Every round of one mode, and the medians the comparison uses."""
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    return {"rounds": runs, "requests_per_s": median("requests_per_s"), "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"), "server_cpu_ms_per_request": median("server_cpu_ms_per_request"),
            "mean_batch": median("mean_batch"), "ok": sum(r["ok"] for r in runs),
            "requests": sum(r["requests"] for r in runs), "server_errors": sum(r["server_errors"] for r in runs),
            "other_errors": sum(r["other_errors"] for r in runs)}


def print_table(results: dict[str, dict], speedup: float, cpu_ratio: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gmai serve under load (loopback; medians over rounds, counts summed)")
    for col in ("mode", "ok / sent", "5xx", "other errors", "p50 ms", "p99 ms", "req/s", "mean batch",
                "server CPU ms/req"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for name, r in results.items():
        table.add_row(name, f"{r['ok']} / {r['requests']}", str(r["server_errors"]), str(r["other_errors"]),
                      f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['requests_per_s']:.2f}", f"{r['mean_batch']:.1f}",
                      f"{r['server_cpu_ms_per_request']:.0f}")
    Console(width=130).print(table)
    Console(width=130).print(f"speedup (requests/s, batching on / off): [bold]{speedup:.2f}x[/bold] (target >= 2x); "
                    f"server CPU per request: {cpu_ratio:.2f}x less with batching")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="server's torch CPU threads, same for both runs (1: robust on a shared CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both modes")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds per run, at most")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(tmp)
        bodies = request_bodies(args.requests, args.max_tokens, model=checkpoint.name)
        modes = {"batching on": ("batching", ["--max-batch", str(args.max_batch), "--batch-wait-ms",
                                              str(args.batch_wait_ms)]),
                 "batching off": ("no-batching", ["--no-batching"])}
        rounds = interleaved_rounds(list(modes), args.rounds, lambda mode, r: run_mode(
            checkpoint, f"{modes[mode][0]}-{r}", modes[mode][1], bodies, args.clients, args.run_timeout, tmp,
            args.torch_threads))
    results = {mode: summarize(runs) for mode, runs in rounds.items()}
    on, off = results["batching on"]["requests_per_s"], results["batching off"]["requests_per_s"]
    speedup = on / off if off else float("inf")
    cpu_on = results["batching on"]["server_cpu_ms_per_request"]
    cpu_ratio = results["batching off"]["server_cpu_ms_per_request"] / cpu_on if cpu_on else float("inf")
    print_table(results, speedup, cpu_ratio)
    report = {"benchmark": "serve_load", "model": "tiny preset, random weights (synthetic)" if not args.checkpoint
              else args.checkpoint, "requests": args.requests, "clients": args.clients, "max_tokens": args.max_tokens,
              "torch_threads": args.torch_threads, "rounds": args.rounds,
              "server_cpu": "server process + its live worker processes (benchmarks/measure.server_cpu_seconds)",
              "results": results, "speedup_requests_per_s": round(speedup, 2), "target_speedup": 2.0,
              "speedup_per_round": [round(a["requests_per_s"] / b["requests_per_s"], 2) if b["requests_per_s"] else None
                                    for a, b in zip(rounds["batching on"], rounds["batching off"])],
              "server_cpu_per_request_ratio_off_over_on": round(cpu_ratio, 2),
              "meets_target": speedup >= 2.0 and all(r["server_errors"] == 0 for runs in rounds.values() for r in runs),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
                          "note": "shared 2-core machine running other jobs (busy): wall-clock numbers are noisy"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
