"""Service load benchmark: latency of the API's hot paths over real HTTP (uvicorn subprocess,
PostgreSQL, Redis broker; no worker, so only the API is measured).

    .venv/bin/python -m benchmarks.service_load [--requests 200] [--concurrency 8]

Uploads go through the whole intake path (stream, sha-256, static safety checks, storage) because
each upload comes from a new tenant (dedup is per tenant). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests import service_harness as harness

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn, count: int, concurrency: int) -> tuple[list[float], float]:
    def one(i):
        start = time.perf_counter()
        fn(i)
        return (time.perf_counter() - start) * 1000

    wall = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(count)))
    return latencies, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    name, url = harness.create_database()
    prefix = f"zdbench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as home:
        service = harness.start_service(database_url=url, home=Path(home), redis_url=harness.REDIS_URL,
                                        redis_prefix=prefix, workers=0)
        try:
            rows = run(service, args)
        finally:
            service.stop()
            harness.clear_redis_prefix(harness.REDIS_URL, prefix)
            harness.drop_database(name)
    print(f"\n{args.concurrency} concurrent clients, API on 1 uvicorn process\n")
    print("| operation | requests | p50 ms | p95 ms | max ms | req/s |")
    print("|---|---|---|---|---|---|")
    for label, (latencies, wall) in rows.items():
        print(f"| {label} | {len(latencies)} | {statistics.median(latencies):.1f} | {percentile(latencies, 0.95):.1f} "
              f"| {max(latencies):.1f} | {len(latencies) / wall:.1f} |")


def run(service, args) -> dict:
    rows = {}
    for model_file in ("resnet20_cifar10.pt2", "resnet56_cifar10.pt2", "resnet56_cifar10.onnx"):
        content = (MODELS / model_file).read_bytes()
        keys = [service.create_key(f"bench-{uuid.uuid4().hex[:6]}") for _ in range(args.uploads)]

        def upload(i, content=content, keys=keys):
            r = httpx.post(f"{service.url}/v1/models", headers={"Authorization": f"Bearer {keys[i]}"},
                           files={"file": (model_file, content)}, timeout=120)
            assert r.status_code == 201, r.text

        rows[f"POST /v1/models ({model_file}, {len(content) / 2**20:.1f} MiB)"] = timed(
            upload, args.uploads, min(args.concurrency, 4))
    key = service.create_key("bench-jobs")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=60,
                      limits=httpx.Limits(max_connections=args.concurrency)) as client:
        model_id = client.post("/v1/models", files={"file": ("m.pt2", (MODELS / "resnet20_cifar10.pt2").read_bytes())}
                               ).json()["id"]
        job_ids: list[str] = []

        def create(i):
            r = client.post("/v1/jobs", json={"model_id": model_id, "config": {"seed": i}})
            assert r.status_code == 201, r.text
            job_ids.append(r.json()["id"])

        rows["POST /v1/jobs (row + enqueue)"] = timed(create, args.requests, args.concurrency)
        rows["GET /v1/jobs/{id}"] = timed(lambda i: client.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}").raise_for_status(),
                                          args.requests, args.concurrency)
        rows["GET /v1/jobs?limit=50"] = timed(lambda i: client.get("/v1/jobs", params={"limit": 50}).raise_for_status(),
                                              args.requests, args.concurrency)
        rows["GET /healthz"] = timed(lambda i: client.get("/healthz").raise_for_status(), args.requests,
                                     args.concurrency)
    return rows


if __name__ == "__main__":
    main()
