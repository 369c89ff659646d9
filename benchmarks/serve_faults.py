"""`gmai serve` under load and under hostile clients, on loopback: one run, one server, one table.

Scenarios, one after another against the same server (the tiny preset, random weights: synthetic;
replies are gibberish, ``max_tokens`` bounds the work):

- ``baseline``: 8 clients sending valid requests (text, or a 64x64 PNG + text) for --phase-s;
- ``load``: 64 clients for --load-s (60 s);
- ``idle sockets``: 300 TCP connections that send nothing, held, while 8 clients run;
- ``slow headers``: 50 connections sending their headers one byte per 100 ms, while 8 clients run;
- ``abandoned``: 20 non-streaming requests for 900 tokens whose clients disconnect at 0.5 s, while
  8 clients run; the server's CPU seconds over the phase say whether the generations stopped;
- ``abusive body``: one 17 MB body of 580,000 empty messages and one of 60,000, while 8 clients run;
- ``image burst 1..3``: 8 clients sending requests of 4 large (3000x3000) PNGs for 30 s, then 10 s
  idle; three times, so that memory kept after a burst (or growing burst after burst) shows.

Each reports the status counts of the valid requests and of the fault traffic, p50/p99 latency of
the valid requests, and the RSS of the server (its worker processes included) before, at peak
and after, split into the main process and its workers. Every loop is bounded by time or count and
stops by itself; traffic goes to 127.0.0.1.

    python benchmarks/serve_faults.py [--load-s 60] [--phase-s 20] [--checkpoint DIR]
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
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import server_cpu_seconds  # noqa: E402 - same folder
from serve_load import make_checkpoint, request_bodies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-faults-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class RSSSampler:
    """RSS of a process (``main``) and of its children (``workers``), sampled every 0.2 s in a thread."""

    def __init__(self, pid: int):
        import psutil

        self.process, self._stop = psutil.Process(pid), threading.Event()
        self.peak = {"total": 0.0, "main": 0.0, "workers": 0.0}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        import psutil

        def rss(proc) -> int:
            try:
                return proc.memory_info().rss
            except psutil.Error:  # a worker that ended between listing and reading
                return 0

        main = rss(self.process) / 2**20
        workers = sum(rss(child) for child in self.process.children(recursive=True)) / 2**20
        return {"total": main + workers, "main": main, "workers": workers}

    def now_mb(self) -> float:
        return self.sample()["total"]

    def _track(self, sample: dict[str, float]) -> None:
        self.peak = {k: max(self.peak[k], v) for k, v in sample.items()}

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._track(self.sample())

    def __enter__(self):
        self.before_parts = self.sample()
        self.before = self.before_parts["total"]
        self._track(self.before_parts)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 1)


async def valid_clients(base_url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """``clients`` loops sending valid requests until ``seconds`` pass (each request at most 60 s)."""
    import httpx

    statuses, latencies = Counter(), []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def loop(http, offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                response = await http.post(f"{base_url}/v1/chat/completions", json=bodies[i % len(bodies)])
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.monotonic() - start)
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1
            i += clients

    async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as http:
        await asyncio.gather(*(loop(http, k) for k in range(clients)))
    return {"statuses": dict(statuses), "ok": statuses["200"], "p50_ms": _pct(latencies, 50),
            "p99_ms": _pct(latencies, 99), "max_ms": _pct(latencies, 100)}


async def idle_sockets(port: int, count: int, hold_s: float) -> dict:
    conns = []
    for _ in range(count):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break
    await asyncio.sleep(hold_s)
    closed_by_server = 0
    for reader, writer in conns:
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.01)
            closed_by_server += data == b"" or data.startswith(b"HTTP/1.1 503")
        except (asyncio.TimeoutError, ConnectionError):
            pass
        writer.close()
    return {"opened": len(conns), "closed_by_server_while_held": closed_by_server}


async def slow_header_clients(port: int, count: int, seconds: float) -> dict:
    async def one() -> float | None:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        try:
            while time.monotonic() - start < seconds:
                writer.write(b"a")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1024), 0.1) == b"":
                        return time.monotonic() - start
                except asyncio.TimeoutError:
                    pass
        except ConnectionError:
            return time.monotonic() - start
        finally:
            writer.close()
        return None  # never closed within the phase

    closed_after = await asyncio.gather(*(one() for _ in range(count)))
    closed = [t for t in closed_after if t is not None]
    return {"connections": count, "closed_by_server": len(closed),
            "closed_after_s_max": round(max(closed), 2) if closed else None}


async def abandoned_requests(base_url: str, body: dict, count: int) -> dict:
    import httpx

    outcomes = Counter()

    async def one(http) -> None:
        try:
            response = await http.post(f"{base_url}/v1/chat/completions", json=body, timeout=0.5)
            outcomes[str(response.status_code)] += 1
        except httpx.TimeoutException:
            outcomes["abandoned at 0.5 s"] += 1

    async with httpx.AsyncClient(headers=AUTH) as http:
        await asyncio.gather(*(one(http) for _ in range(count)))
    return {"sent": count, "outcomes": dict(outcomes)}


async def abusive_bodies(base_url: str, model: str) -> dict:
    import httpx

    out = {}
    async with httpx.AsyncClient(timeout=120, headers={**AUTH, "content-type": "application/json"}) as http:
        for n in (580_000, 60_000):
            raw = (b'{"model": "%s", "messages": [' % model.encode() +
                   b",".join([b'{"role": "user", "content": ""}'] * n) + b"]}")
            start = time.monotonic()
            response = await http.post(f"{base_url}/v1/chat/completions", content=raw)
            out[f"{n} messages ({len(raw) / 2**20:.1f} MiB)"] = {
                "status": response.status_code, "code": response.json()["error"]["code"],
                "refused_after_s": round(time.monotonic() - start, 2)}
    return out


def large_image_bodies(model: str, n: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    row = (np.arange(3000) % 251).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(row[None, :, None], (3000, 3000, 3)))).save(
        buf, format="PNG", compress_level=1)
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    parts = [{"type": "image_url", "image_url": {"url": url}}] * 4 + [{"type": "text", "text": "describe"}]
    return [{"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": parts}]}] * n


def phase(server, name: str, background, fault=None, settle_s: float = 3.0) -> dict:
    """Run ``background`` (valid clients) with ``fault`` (hostile traffic) alongside; RSS around it."""
    with RSSSampler(server.pid) as rss:
        cpu = server_cpu_seconds(server.pid)

        async def both():
            tasks = [background()] + ([fault()] if fault else [])
            return await asyncio.gather(*tasks)

        start = time.monotonic()
        results = asyncio.run(both())
        wall = time.monotonic() - start
        time.sleep(settle_s)
        after = rss.sample()
        rss._track(after)
    row = {"valid": results[0], "wall_s": round(wall, 1), "server_cpu_s": round(server_cpu_seconds(server.pid) - cpu, 2),
           "rss_mb": {"before": round(rss.before), "peak": round(rss.peak["total"]), "after": round(after["total"]),
                      **{f"{part}_{when}": round(value[part]) for part in ("main", "workers")
                         for when, value in (("before", rss.before_parts), ("peak", rss.peak), ("after", after))}}}
    if fault:
        row["fault"] = results[1]
    print(f"{name}: {json.dumps(row)}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-s", type=float, default=60.0)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--image-bursts", type=int, default=3)
    parser.add_argument("--phases", nargs="*", default=[], help="run only these phases (e.g. 'image burst')")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_faults.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    from gmai.serve.process import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(tmp)
        model = checkpoint.name
        bodies = request_bodies(64, 16, model=model)
        bodies += [{"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": q}]}
                   for q in ("What modality is this?", "Is there a lesion?", "Describe the image.")] * 8
        server_args = ["--log-level", "warning", "--torch-threads", str(args.torch_threads),
                       "--max-tokens-limit", "1024"]
        with ServerProcess(checkpoint, api_key=KEY, args=server_args, log_path=tmp / "server.log") as server:
            url, port = server.url, server.port
            clients8 = lambda s=args.phase_s: valid_clients(url, bodies, 8, s)  # noqa: E731
            asyncio.run(valid_clients(url, bodies, 4, 5))  # warm-up, not reported
            long_body = {"model": model, "max_tokens": 900, "temperature": 0,
                         "messages": [{"role": "user", "content": "describe the scan in detail"}]}
            images = large_image_bodies(model, 16)
            phases = {
                "baseline": lambda: phase(server, "baseline", clients8),
                "load": lambda: phase(server, "load", lambda: valid_clients(url, bodies, 64, args.load_s)),
                "idle sockets": lambda: phase(server, "idle sockets", clients8,
                                              lambda: idle_sockets(port, 300, args.phase_s - 2)),
                "slow headers": lambda: phase(server, "slow headers", clients8,
                                              lambda: slow_header_clients(port, 50, args.phase_s)),
                "abandoned": lambda: phase(server, "abandoned", clients8, lambda: abandoned_requests(url, long_body, 20)),
                "abusive body": lambda: phase(server, "abusive body", clients8, lambda: abusive_bodies(url, model)),
            }
            for k in range(args.image_bursts):  # repeated: does memory come back, or climb burst after burst?
                phases[f"image burst {k + 1}"] = lambda k=k: phase(
                    server, f"image burst {k + 1}", lambda: valid_clients(url, images, 8, 30), settle_s=10.0)
            results = {name: run() for name, run in phases.items()
                       if not args.phases or name.rstrip(" 0123456789") in args.phases or name in args.phases}
            health = __import__("httpx").get(url + "/health", timeout=10).json()
    print_table(results)
    fives = sum(int(k) >= 500 for r in results.values() for k, v in r["valid"]["statuses"].items() if k.isdigit()
                for _ in range(v))
    report = {"benchmark": "serve_faults", "model": "tiny preset, random weights (synthetic)"
              if not args.checkpoint else args.checkpoint, "torch_threads": args.torch_threads,
              "load_s": args.load_s, "phase_s": args.phase_s, "results": results,
              "valid_5xx_total": fives, "health_without_key": health,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
                          "note": "shared 2-core machine running other jobs: latencies are busy-machine numbers"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gmai serve: load and faults (loopback)")
    for col in ("phase", "valid statuses", "p50 ms", "p99 ms", "RSS MB before / peak / after",
                "main / workers after", "fault traffic"):
        table.add_column(col)
    for name, r in results.items():
        v, m = r["valid"], r["rss_mb"]
        table.add_row(name, json.dumps(v["statuses"]), str(v["p50_ms"]), str(v["p99_ms"]),
                      f"{m['before']} / {m['peak']} / {m['after']}", f"{m['main_after']} / {m['workers_after']}",
                      json.dumps(r.get("fault", ""))[:60])
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
