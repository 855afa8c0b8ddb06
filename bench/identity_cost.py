"""What per-instance identity costs the controller: a report's credential check, a registration.

`python -m bench.identity_cost [--agents 10000] [--rounds 20]` issues one credential per
agent, then checks every agent's report credential `rounds` times in a shuffled order (the way
reports of a large fleet arrive), timing each check alone; and registers each agent once
(signature verification with a 1024-bit RSA key, the size of AWS's regional keys, plus
issuing). It prints p50/p99/max per operation in microseconds and the CPU share the checks
take at one report per agent every 5 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from controller.identity.credentials import CredentialIssuer, authenticate_report
from controller.identity.document import SignedDocuments
from controller.identity.registrar import Policy, Registrar, Registration

ACCOUNT = "123456789012"
REGION = "eu-west-1"


class _AllManaged:
    def managed(self, instance_id: str) -> bool:
        return True

    def look_again(self, now: float) -> None:
        pass


def _instance(n: int) -> str:
    return f"i-{n:017x}"


def _document(instance_id: str) -> bytes:
    fields = {
        "accountId": ACCOUNT,
        "instanceId": instance_id,
        "pendingTime": "2026-12-01T08:00:00Z",
        "region": REGION,
    }
    return json.dumps(fields, indent=2, separators=(",", " : ")).encode()


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_us": round(cut[49] / 1000, 1),
        "p99_us": round(cut[98] / 1000, 1),
        "max_us": round(ordered[-1] / 1000, 1),
        "mean_us": round(statistics.fmean(ordered) / 1000, 1),
    }


def measure(agents: int, rounds: int, seed: int) -> dict[str, object]:
    wall = time.time()
    issuer = CredentialIssuer([b"k" * 32], ttl=3600, wall_clock=lambda: wall)
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    public = certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    registrar = Registrar(
        verifier=SignedDocuments({REGION: (public,)}),
        policy=Policy(allowed_accounts=frozenset({ACCOUNT})),
        membership=_AllManaged(),
        issuer=issuer,
    )
    ids = [_instance(n) for n in range(agents)]
    requests = []
    for instance in ids:
        document = _document(instance)
        signature = base64.b64encode(key.sign(document, padding.PKCS1v15(), hashes.SHA256()))
        requests.append(Registration(instance, "boot", document, signature.decode()))

    register_ns: list[int] = []
    headers: dict[str, str] = {}
    for request in requests:
        started = time.perf_counter_ns()
        credential = registrar.register(request, wall=wall, now=0.0)
        register_ns.append(time.perf_counter_ns() - started)
        headers[request.instance_id] = f"Bearer {credential.token}"

    rng = random.Random(seed)
    check_ns: list[int] = []
    order = ids * rounds
    rng.shuffle(order)
    for instance in order:
        header = headers[instance]
        started = time.perf_counter_ns()
        authenticate_report(issuer, header, instance, "boot")
        check_ns.append(time.perf_counter_ns() - started)

    check = _percentiles(check_ns)
    reports_per_second = agents / 5.0
    return {
        "agents": agents,
        "report_credential_check": check,
        "registration": _percentiles(register_ns),
        "cpu_share_at_one_report_per_agent_per_5s": round(
            reports_per_second * check["mean_us"] / 1e6, 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.identity_cost")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = measure(args.agents, args.rounds, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
