"""Simulated agents: N instances each POST a report every 5 s, spread evenly over the period.

`python -m bench.scale.loadgen --url URL --instances N --duration S` runs in a process of its
own so that it does not share the controller's event loop or core. Each report has a small
chance of flipping its Jibri between IDLE and BUSY, at `--changes-per-second` across the fleet,
which is what makes the controller plan and act. A fixed pool of
`--concurrency` workers sends them; latency is timed from the moment a worker starts a request
to the end of its response, so waiting for a free worker is excluded (but this process's own
event-loop lag is not: see the launcher's server-side figures). `--shard I/K` runs a K-th of
the agents, so several generator processes can share the load. Writes one JSON document with
the raw latencies (to `--result`, or stdout). Prints one
JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.scale.fake_aws import instance_id
from common.wire import REGISTER_PATH, REPORTS_PATH, TOKEN_ENV, RegisterAnswer

PERIOD = 5.0
SLOTS = 50
"""Each period is cut into this many ticks; an agent always reports in its own tick."""
ACCOUNT = "123456789012"


@dataclass(slots=True)
class Agent:
    instance_id: str
    boot_id: str
    busy: bool
    seq: int = 0
    authorization: str = ""
    """`Bearer <credential>`, from registering before the measured run."""


@dataclass
class Tally:
    latencies: list[float]
    sent: int = 0
    errors: int = 0
    changes: int = 0
    late_ticks: int = 0
    dropped: int = 0


def _body(agent: Agent) -> bytes:
    agent.seq += 1
    status = "BUSY" if agent.busy else "IDLE"
    return (
        f'{{"instanceId":"{agent.instance_id}","bootId":"{agent.boot_id}","seq":{agent.seq},'
        f'"jibri":{{"busyStatus":"{status}","healthStatus":"HEALTHY"}},'
        '"draining":false,"drained":false,"pendingUploads":0}'
    ).encode()


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    queue: asyncio.Queue[tuple[Agent, bool]],
    tally: Tally,
) -> None:
    while True:
        agent, measuring = await queue.get()
        body = _body(agent)
        started = time.perf_counter()
        try:
            headers = {"Authorization": agent.authorization}
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status in (200, 202)
        except aiohttp.ClientError:
            ok = False
        elapsed = time.perf_counter() - started
        queue.task_done()
        if measuring:
            tally.sent += 1
            if ok:
                tally.latencies.append(elapsed)
            else:
                tally.errors += 1


def _registration(agent: Agent) -> str:
    # The launcher runs the controller with --insecure-identity: the document is not signed,
    # every other check (instance, account, managed group) and every report's credential
    # check are the real ones. bench.identity_cost measures the signature check apart.
    document = json.dumps(
        {
            "accountId": ACCOUNT,
            "instanceId": agent.instance_id,
            "pendingTime": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
        }
    ).encode()
    return json.dumps(
        {
            "instanceId": agent.instance_id,
            "bootId": agent.boot_id,
            "document": base64.b64encode(document).decode(),
            "signature": "unsigned",
        }
    )


async def _register_all(
    session: aiohttp.ClientSession, url: str, token: str, agents: list[Agent], concurrency: int
) -> None:
    """Register every agent (retrying those whose group the controller has not read yet)."""
    pending = asyncio.Queue[Agent]()
    for agent in agents:
        pending.put_nowait(agent)
    deadline = time.perf_counter() + 120.0

    async def worker() -> None:
        while not pending.empty():
            agent = pending.get_nowait()
            async with session.post(
                url + REGISTER_PATH,
                data=_registration(agent),
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                text = await response.text()
            if response.status == 200:
                credential = RegisterAnswer.model_validate_json(text).credential
                agent.authorization = f"Bearer {credential}"
            elif time.perf_counter() > deadline:
                raise SystemExit(f"cannot register {agent.instance_id}: {response.status} {text}")
            else:
                await asyncio.sleep(0.5)
                pending.put_nowait(agent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run(
    url: str,
    token: str,
    instances: int,
    *,
    duration: float,
    warmup: float,
    changes_per_second: float,
    concurrency: int,
    seed: int,
    shard: int = 0,
    shards: int = 1,
) -> dict[str, object]:
    """Run the agents of instances shard+1, shard+1+shards, … (all of them with one shard)."""
    rng = random.Random(f"{seed}:{shard}")
    agents = [
        Agent(instance_id(n), f"boot-{n}", busy=rng.random() < 0.5)
        for n in range(shard + 1, instances + 1, shards)
    ]
    slots: list[list[Agent]] = [agents[i::SLOTS] for i in range(SLOTS)]
    flip = min(1.0, changes_per_second * PERIOD / instances)
    tally = Tally(latencies=[])
    # At most one period of reports may wait for a connection; beyond that the generator
    # is behind and says so instead of queueing without bound.
    queue: asyncio.Queue[tuple[Agent, bool]] = asyncio.Queue(maxsize=len(agents))
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    tick = PERIOD / SLOTS
    target = url + REPORTS_PATH
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await _register_all(session, url, token, agents, concurrency)
        workers = [
            asyncio.create_task(_worker(session, target, queue, tally), name=f"agent-worker-{i}")
            for i in range(concurrency)
        ]
        start = time.perf_counter()
        n = 0
        try:
            while True:
                due = start + n * tick
                now = time.perf_counter()
                if now - start >= warmup + duration:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > tick:
                    tally.late_ticks += 1
                measuring = now - start >= warmup
                for agent in slots[n % SLOTS]:
                    if n >= SLOTS and rng.random() < flip:
                        agent.busy = not agent.busy
                        if measuring:
                            tally.changes += 1
                    if queue.full():
                        tally.dropped += int(measuring)
                    else:
                        queue.put_nowait((agent, measuring))
                n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), timeout=10.0)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return {
        "agents": len(agents),
        "reportsSent": tally.sent,
        "dropped": tally.dropped,
        "errors": tally.errors,
        "changes": tally.changes,
        "lateTicks": tally.late_ticks,
        "latencies": [round(x, 6) for x in tally.latencies],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--changes-per-second", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shard", default="0/1", help="I/K: run every K-th agent from the I-th")
    parser.add_argument("--result", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    index, _, count = args.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        print("--shard must be I/K with 0 <= I < K", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_ENV, "")
    if not token or args.instances < 1 or args.duration <= 0:
        print(f"need {TOKEN_ENV}, --instances >= 1 and --duration > 0", file=sys.stderr)
        return 2
    result = asyncio.run(
        run(
            args.url.rstrip("/"),
            token,
            args.instances,
            duration=args.duration,
            warmup=args.warmup,
            changes_per_second=args.changes_per_second,
            concurrency=args.concurrency,
            seed=args.seed,
            shard=int(index),
            shards=int(count),
        )
    )
    document = json.dumps(result)
    if args.result is not None:
        args.result.write_text(document)
    else:
        print(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
