"""Agent latency: from a Jibri status change to the report carrying it reaching the controller.

    python -m bench.agent_webhook_latency [--trials 40] [--out out/bench-agent-webhook.json]

A real agent process (`python -m agent run`) reports to a stand-in controller served in this
process on loopback, and watches a fake Jibri also served here, so the change and the
report's arrival are timed on one clock. Each trial flips the fake Jibri between IDLE and
BUSY and waits for the report that says so. Two paths, one agent process each:

  webhook   Jibri pushes the change to the agent's /v1/status; polls are 60 s apart, so only
            the push can deliver the change in time.
  poll      no push; the agent finds the change at its next health poll (default 2 s).

Trials are a random 0-2 s apart, so changes land at every phase of the poll cycle.
p50, p99 (nearest rank) and max of each print as a table and go to JSON with every sample.
The target is p99 well under one second for the webhook path. The controller's own share
(report received → SetDesiredCapacity) is measured by bench.decision_latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common.wire import BusyStatus
from sandbox.fake_jibri import FakeJibri
from tests.support.agent_process import Recorder, agent_env
from tests.support.fake_controller import FakeController
from tests.support.loopback import eventually, serving

INSTANCE = "i-0be0c4be0c4be0c4b"


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def measure(path: str, trials: int, root: Path) -> list[float]:
    controller = FakeController(token="bench")
    jibri = FakeJibri(jibri_id=path)
    await jibri.start()
    home = root / path
    home.mkdir()
    recorder = Recorder(INSTANCE, jibri, home, push=path == "webhook")
    poll = "60s" if path == "webhook" else "2s"
    samples: list[float] = []
    try:
        async with serving(controller.app()) as url:
            agent = await recorder.start_agent(
                url,
                agent_env(None, "bench"),
                ("--poll-interval", poll, "--report-interval", "60s", "--log-level", "warning"),
            )
            await eventually(
                lambda: bool(controller.reports) and jibri.pushing,
                what="the first report",
            )
            await asyncio.sleep(0.5)
            loop = asyncio.get_running_loop()
            for trial in range(trials):
                busy = trial % 2 == 0
                seen = len(controller.reports)
                started = loop.time()
                if busy:
                    await jibri.start_recording(f"trial-{trial}")
                else:
                    await jibri.stop_recording()
                wanted = BusyStatus.BUSY if busy else BusyStatus.IDLE
                deadline = started + 30
                while True:
                    fresh = list(
                        zip(controller.reports[seen:], controller.arrivals[seen:], strict=True)
                    )
                    hit = next((at for r, at in fresh if r.jibri.busyStatus is wanted), None)
                    if hit is not None:
                        samples.append(hit - started)
                        break
                    if loop.time() > deadline:
                        raise RuntimeError(f"{path}: no report of {wanted} within 30 s")
                    await asyncio.sleep(0.001)
                # A random gap, so that changes land at every phase of the poll cycle.
                await asyncio.sleep(random.uniform(0.05, 2.0))
            await agent.stop()
    finally:
        await jibri.close()
    return samples


async def main_async(trials: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as work:
        for path in ("webhook", "poll"):
            samples = await measure(path, trials, Path(work))
            results[path] = {
                "p50": percentile(samples, 50),
                "p99": percentile(samples, 99),
                "max": max(samples),
                "samples": samples,
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_webhook_latency")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    started = time.monotonic()
    results = asyncio.run(main_async(args.trials))
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   ({args.trials} trials each)")
    for path, figures in results.items():
        print(
            f"{path:<8} {figures['p50'] * 1000:8.1f} {figures['p99'] * 1000:8.1f}"
            f" {figures['max'] * 1000:8.1f}"
        )
    print(f"took {time.monotonic() - started:.0f} s")
    document = json.dumps({"trials": args.trials, **results}, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
