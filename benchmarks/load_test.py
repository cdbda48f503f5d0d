"""Load test of the real HTTP service: 1, 8, 32 and 64 concurrent clients, the service as configured (bounded
queue, deadline with the fallback ranker) against the same service with neither (an unbounded queue, no deadline).

Starts the service once per mode with uvicorn on 127.0.0.1 (serving.demo on, for the test reviewers' histories),
sends a fixed number of POST /recommendations per client count, and prints side by side: answers 200 (and how
many degraded), 429, 5xx; throughput; p50/p95/p99 latency of the 200s. Nothing may answer 5xx.

    python benchmarks/load_test.py --env industrial --params recommend.ranker=fusion --out benchmarks/reported/serving
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
# configured: conf's serving.max_queue and serving.deadline_ms; unbounded: the service as it was before them
MODES = {"configured": [], "unbounded": ["serving.max_queue=1000000", "serving.deadline_ms=null"]}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, env: str | None, params: list[str], port: int, log: Path,
                 api_key: str | None = None) -> subprocess.Popen:
    """Start `python -m amazon_llm_rec.serving` on 127.0.0.1:port; its log goes to `log`."""
    cmd = [sys.executable, "-m", "amazon_llm_rec.serving", "--project", str(project), "--host", "127.0.0.1",
           "--port", str(port)]
    if env:
        cmd += ["--env", env]
    if params:
        cmd += ["--params", *params]
    environ = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    environ.pop("AMAZON_LLM_REC_API_KEY", None)
    if api_key:
        environ["AMAZON_LLM_REC_API_KEY"] = api_key
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=project, stdout=handle, stderr=subprocess.STDOUT, env=environ)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600, headers: dict[str, str] | None = None) -> dict:
    """Poll /ready until it answers 200; fail if the process dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/ready", timeout=5, headers=headers)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server and wait for it."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def run_load(url: str, clients: int, total: int, payloads: list[dict[str, Any]], timeout: float = 600,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send `total` POST /recommendations from `clients` threads at once; return throughput, latencies and the
    answers by kind: 200 (and how many of them degraded), 429 (queue full), other 4xx, 5xx, transport errors.
    `failed` counts what should not happen under overload: 5xx, other 4xx, transport errors and empty 200s."""
    latencies: list[float] = []
    counts = {"ok": 0, "degraded": 0, "rejected_429": 0, "other_4xx": 0, "server_5xx": 0, "transport": 0}
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        with httpx.Client(timeout=timeout, headers=headers) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                kind, why = "transport", ""
                try:
                    r = client.post(url + "/recommendations", json=payloads[i % len(payloads)])
                    if r.status_code == 200:  # noqa: PLR2004
                        body = r.json()
                        kind = "ok" if body["items"] else "empty"
                        with lock:
                            counts["degraded"] += bool(body.get("degraded"))
                    elif r.status_code == 429:  # noqa: PLR2004
                        kind = "rejected_429"
                    else:
                        kind = "server_5xx" if r.status_code >= 500 else "other_4xx"  # noqa: PLR2004
                    why = f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    why = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - start
                with lock:
                    if kind == "ok":
                        latencies.append(elapsed)
                    if kind in counts:
                        counts[kind] += 1
                    if kind not in ("ok", "rejected_429"):
                        failures.append(why)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = latencies or [float("nan")]
    return {"clients": clients, "requests": total, **counts, "failed": len(failures), "failures": failures[:5],
            "seconds": round(wall, 2), "answered_per_s": round(counts["ok"] / wall, 3),
            "p50_ms": round(1000 * percentile(lat, 50), 1), "p95_ms": round(1000 * percentile(lat, 95), 1),
            "p99_ms": round(1000 * percentile(lat, 99), 1)}


def payloads_from(url: str, n: int, k: int = 10, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Request bodies from the service's own test reviewers (their histories as ASINs)."""
    reviewers = httpx.get(url + "/reviewers", params={"limit": n}, timeout=30, headers=headers).json()
    return [{"history": [p["asin"] for p in r["history"]], "k": k} for r in reviewers]


def main() -> None:
    """Both modes, every client count; print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(ROOT))
    parser.add_argument("--env", default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, nargs="+", default=[8, 32, 64, 128], help="requests per client count")
    parser.add_argument("--params", nargs="*", default=[], help="runtime parameters for every server")
    parser.add_argument("--modes", nargs="+", default=["configured", "unbounded"], choices=list(MODES))
    parser.add_argument("--out", default=None, help="folder for load_test.json and the server logs")
    args = parser.parse_args()
    if len(args.requests) != len(args.clients):
        parser.error("--requests needs one number per --clients entry")
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows, info = [], {}
    for mode in args.modes:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (out or Path("/tmp")) / f"server_{mode}.log"
        proc = start_server(Path(args.project), args.env, [*args.params, "serving.demo=true", *MODES[mode]], port, log)
        try:
            info = wait_ready(url, proc)
            payloads = payloads_from(url, 64)
            for clients, total in zip(args.clients, args.requests, strict=True):
                row = {"mode": mode, **run_load(url, clients, total, payloads)}
                ready = httpx.get(url + "/ready", timeout=10).json()
                row["largest_batch_so_far"] = ready["largest_batch"]
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop_server(proc)
    header = (f"{'mode':<11} {'clients':>7} {'sent':>5} {'200':>5} {'degraded':>8} {'429':>5} {'5xx':>4} {'failed':>6} "
              f"{'200/s':>7} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    print("\n" + header)
    for r in rows:
        print(f"{r['mode']:<11} {r['clients']:>7} {r['requests']:>5} {r['ok']:>5} {r['degraded']:>8} "
              f"{r['rejected_429']:>5} {r['server_5xx']:>4} {r['failed']:>6} {r['answered_per_s']:>7.2f} "
              f"{r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} {r['p99_ms']:>9.1f}")
    if out:
        (out / "load_test.json").write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "env": args.env, "params": args.params, "modes": {m: MODES[m] for m in args.modes},
            "ranker": info.get("ranker"), "fallback": info.get("fallback"), "deadline_ms": info.get("deadline_ms"),
            "max_queue": info.get("max_queue"), "num_candidates": info.get("num_candidates"),
            "products": info.get("products"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
