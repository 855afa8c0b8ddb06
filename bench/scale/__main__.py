"""`python -m bench.scale`: the controller under 1,000 and 10,000 reporting agents.

For each fleet size it starts the controller's real app in its own process with the fast AWS
fake injected (bench.scale.launcher), waits for /healthz, runs the agents' load from another
process (bench.scale.loadgen), samples the controller's CPU and memory with psutil, reads
per-pass figures from the launcher and the decision-latency histogram from /metrics, then
stops it with SIGTERM. It also times plan() in this
process on a 10,000-instance observation. Prints a table and writes out/bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.scale.plan_timing import time_plan
from common.wire import TOKEN_ENV

AWS_NOTE = (
    "AWS: in-process fake behind controller.aws.AutoScaling and the CloudWatch Protocols "
    "(moto serves one request at a time and cannot hold a 10,000-instance group)"
)
TARGETS = {"reportP99": 0.050, "cpuCores": 1.0, "peakRssMb": 200.0, "planSeconds": 0.050}

CONFIG = """apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata:
  name: bench
spec:
  autoScalingGroupName: bench-{n}
  capacity: {{min: {n}, max: {n}}}
  targetFree: 2
  resync: 15s
  cloudWatch: {{namespace: JibriBench, publishMetrics: true}}
"""


def _listening_url(log_path: Path, process: subprocess.Popen[bytes], deadline: float) -> str:
    """The controller binds port 0; its "listening" event in the log names the port taken."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the controller exited with {process.returncode}; see {log_path}")
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "listening":
                return f"http://{record['addresses'][0]}"
        time.sleep(0.1)
    raise RuntimeError(f"the controller did not listen in time; see {log_path}")


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the controller exited with {process.returncode}; see its log")
        try:
            if _get(url + "/healthz", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the controller did not become healthy in time")


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


DECISION_BUCKET = "jibri_autoscaler_decision_latency_seconds_bucket"
_LE = re.compile(r'le="([^"]+)"')


def _decision_buckets(url: str) -> dict[float, float]:
    """The controller's decision_latency_seconds histogram: cumulative count by upper bound."""
    status, body = _get(url + "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    buckets: dict[float, float] = {}
    for line in body.decode().splitlines():
        if line.startswith(DECISION_BUCKET + "{") and (le := _LE.search(line)):
            buckets[float(le.group(1))] = float(line.rsplit(" ", 1)[1])
    return buckets


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding the q-quantile of what was observed in between."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    return next(le for le, count in counts if count >= q * total)


def bench_fleet(
    n: int,
    *,
    duration: float,
    warmup: float,
    changes: float,
    latency: float,
    generators: int,
    out: Path,
) -> dict[str, Any]:
    token = secrets.token_hex(16)
    env = {**os.environ, TOKEN_ENV: token}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "desired-state.yaml"
        config.write_text(CONFIG.format(n=n))
        log_path = out / f"bench-controller-{n}.log"
        with log_path.open("wb") as log:
            command = [sys.executable, "-m", "bench.scale.launcher", "--config", str(config)]
            command += ["--listen", "127.0.0.1:0", "--aws-latency", str(latency)]
            controller = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 60.0
                url = _listening_url(log_path, controller, deadline)
                _wait_healthy(url, controller, deadline)
                return _measure(
                    n, url, controller, env, duration, warmup, changes, latency, generators, tmp
                )
            finally:
                controller.send_signal(signal.SIGTERM)
                try:
                    controller.wait(timeout=20.0)
                except subprocess.TimeoutExpired:
                    controller.kill()
                    controller.wait()


def _measure(
    n: int,
    url: str,
    controller: subprocess.Popen[bytes],
    env: dict[str, str],
    duration: float,
    warmup: float,
    changes: float,
    latency: float,
    generators: int,
    tmp: str,
) -> dict[str, Any]:
    proc = psutil.Process(controller.pid)
    loads = []
    results = [Path(tmp) / f"agents-{shard}.json" for shard in range(generators)]
    for shard, result in enumerate(results):
        command = [sys.executable, "-m", "bench.scale.loadgen", "--url", url]
        command += ["--instances", str(n), "--shard", f"{shard}/{generators}"]
        command += ["--duration", str(duration), "--warmup", str(warmup)]
        command += ["--changes-per-second", str(changes), "--result", str(result)]
        loads.append(subprocess.Popen(command, env=env))
    started = time.monotonic()
    while time.monotonic() - started < warmup and all(p.poll() is None for p in loads):
        time.sleep(0.1)
    cpu_start, wall_start, since = proc.cpu_times(), time.monotonic(), time.perf_counter()
    decisions_before = _decision_buckets(url)
    rss_peak = proc.memory_info().rss
    while any(p.poll() is None for p in loads):
        rss_peak = max(rss_peak, proc.memory_info().rss)
        time.sleep(0.25)
    cpu_end, wall_end = proc.cpu_times(), time.monotonic()
    if any(load.returncode != 0 for load in loads):
        raise RuntimeError("a load generator failed; see its message above")
    shards = [json.loads(result.read_text()) for result in results]
    latencies = sorted(x for s in shards for x in s["latencies"])
    sent = sum(s["reportsSent"] for s in shards)
    agents = {
        "generators": generators,
        "reportsSent": sent,
        "reportsPerSecond": round(sent / duration, 1),
        "targetReportsPerSecond": round(n / 5.0, 1),
        "dropped": sum(s["dropped"] for s in shards),
        "errors": sum(s["errors"] for s in shards),
        "changes": sum(s["changes"] for s in shards),
        "latencyP50": _quantile(latencies, 0.5),
        "latencyP99": _quantile(latencies, 0.99),
        "latencyMax": latencies[-1] if latencies else None,
    }
    decisions = _decision_buckets(url)
    status, body = _get(f"{url}/bench/stats?since={since}")
    if status != 200:
        raise RuntimeError(f"/bench/stats answered {status}")
    passes = json.loads(body)
    hwm = _peak_rss_mb(controller.pid)
    cpu = (cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / (
        wall_end - wall_start
    )
    calls, changed = passes["awsCalls"], passes["protectionChanges"]
    overhead = [c - math.ceil(p / 50) for c, p in zip(calls, changed, strict=True)]
    return {
        "instances": n,
        "awsLatencySeconds": latency,
        "agents": agents,
        "cpuCores": round(cpu, 3),
        "peakRssMb": round(max(rss_peak / 2**20, hwm or 0.0), 1),
        "passes": passes["passes"],
        "passesPerSecond": round(passes["passes"] / (wall_end - wall_start), 2),
        "passSecondsP50": _quantile(passes["durations"], 0.5),
        "passSecondsP99": _quantile(passes["durations"], 0.99),
        "planSecondsP50": _quantile(passes["planSeconds"], 0.5),
        "planSecondsMax": max(passes["planSeconds"], default=float("nan")),
        "awsCallsPerPassMean": round(statistics.fmean(calls), 2) if calls else None,
        "awsCallsPerPassMax": max(calls, default=0),
        "protectionChangesPerPassMean": round(statistics.fmean(changed), 2) if changed else None,
        "awsCallsBeyondChangesOver50Max": max(overhead, default=0),
        "serverHandlerSecondsP50": _quantile(passes["handlerSeconds"], 0.5),
        "serverHandlerSecondsP99": _quantile(passes["handlerSeconds"], 0.99),
        "loopLagSecondsP99": _quantile(passes["loopLagSeconds"], 0.99),
        "loopLagSecondsMax": max(passes["loopLagSeconds"], default=float("nan")),
        "decisions": decisions.get(math.inf, 0.0) - decisions_before.get(math.inf, 0.0),
        "decisionSecondsP50AtMost": _bucket_quantile(decisions_before, decisions, 0.5),
        "decisionSecondsP99AtMost": _bucket_quantile(decisions_before, decisions, 0.99),
        "awsCallsByOperation": passes["awsCallsByOperation"],
        "cloudwatchCallsByOperation": passes["cloudwatchCallsByOperation"],
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{1000 * seconds:.1f} ms"


def _mark(ok: bool) -> str:
    return "ok" if ok else "OVER"


def render(results: Sequence[dict[str, Any]], plan: dict[str, Any]) -> str:
    lines = [AWS_NOTE, ""]
    for r in results:
        a = r["agents"]
        lines += [
            f"N = {r['instances']:,} agents reporting every 5 s from {a['generators']} processes "
            f"({a['reportsPerSecond']} of {a['targetReportsPerSecond']} reports/s sent, "
            f"{a['dropped']} dropped by a saturated generator, {a['errors']} errors, "
            f"{a['changes']} state changes; AWS latency "
            f"{1000 * r['awsLatencySeconds']:.0f} ms per call)",
            f"  report latency   p50 {_ms(a['latencyP50'])}   p99 {_ms(a['latencyP99'])}   "
            f"[{_mark((a['latencyP99'] or 1) <= TARGETS['reportP99'])}: p99 <= 50 ms]",
            f"  inside server    handler p50 {_ms(r['serverHandlerSecondsP50'])}   "
            f"p99 {_ms(r['serverHandlerSecondsP99'])}   event-loop lag p99 "
            f"{_ms(r['loopLagSecondsP99'])}, max {_ms(r['loopLagSecondsMax'])}",
            f"  controller       {r['cpuCores']:.2f} cores   peak RSS {r['peakRssMb']:.0f} MB   "
            f"[{_mark(r['cpuCores'] <= TARGETS['cpuCores'])}: <= 1 core, "
            f"{_mark(r['peakRssMb'] <= TARGETS['peakRssMb'])}: <= 200 MB]",
            f"  reconcile pass   {r['passes']} passes ({r['passesPerSecond']}/s)   "
            f"p50 {_ms(r['passSecondsP50'])}   p99 {_ms(r['passSecondsP99'])}   "
            f"plan() in pass p50 {_ms(r['planSecondsP50'])}, max {_ms(r['planSecondsMax'])}",
            f"  decision latency p50 <= {_ms(r['decisionSecondsP50AtMost'])}   p99 <= "
            f"{_ms(r['decisionSecondsP99AtMost'])}   (report → first AWS call of its pass, "
            f"{r['decisions']:.0f} passes; bucket bounds of the controller's histogram)",
            f"  AWS calls/pass   mean {r['awsCallsPerPassMean']}   max {r['awsCallsPerPassMax']}"
            f"   (protection changes/pass mean {r['protectionChangesPerPassMean']}; calls beyond "
            f"ceil(changes/50) at most {r['awsCallsBeyondChangesOver50Max']})",
            "",
        ]
    lines.append(
        f"plan() in-process at {plan['instances']:,} instances: p50 {_ms(plan['p50'])}, "
        f"min {_ms(plan['min'])}, max {_ms(plan['max'])} over {plan['runs']} runs   "
        f"[{_mark(plan['p50'] <= TARGETS['planSeconds'])}: <= 50 ms]"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--instances", default="1000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per size")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument(
        "--changes-per-1000",
        type=float,
        default=1.0,
        help="state changes per second per 1,000 instances (default 1: a recorder changes "
        "state about twice per 35-minute recording)",
    )
    parser.add_argument("--aws-latency", type=float, default=0.05, help="seconds per AWS call")
    parser.add_argument(
        "--generators", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.instances.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or args.duration <= 0 or args.warmup < 0:
        print("bench.scale: --instances must list positive sizes; --duration > 0", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        print(f"benchmarking {n:,} agents ...", file=sys.stderr, flush=True)
        results.append(
            bench_fleet(
                n,
                duration=args.duration,
                warmup=args.warmup,
                changes=args.changes_per_1000 * n / 1000.0,
                latency=args.aws_latency,
                generators=max(1, args.generators),
                out=args.out,
            )
        )
    plan = time_plan(10_000)
    document = {"note": AWS_NOTE, "targets": TARGETS, "fleets": results, "plan": plan}
    (args.out / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    print(render(results, plan))
    print(f"\nwritten {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
