"""The sandbox's copy of the desired state, with every timing scaled down to fit in minutes.

Real recorders take minutes to boot and the production config waits minutes before scaling in;
a demo cannot. The sandbox reads the real desired-state file (so it is validated exactly as the
controller validates it), replaces only the timing fields with `Timings`, and writes the result
to its work dir for the controller it starts. Capacity, targetFree, steps and CloudWatch settings
stay as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.spec import DesiredState, load_desired_state, parse_desired_state


@dataclass(frozen=True)
class Timings:
    """Timing fields written into every pool's spec, in seconds."""

    idle_for: float = 20.0
    """scaleIn.idleFor (production default 5m)."""
    delay_after_scale_out: float = 10.0
    """scaleIn.delayAfterScaleOut (production default 2m)."""
    stale_after: float = 6.0
    """instances.staleAfter (production default 30s); agents report every 2 s here."""
    boot_timeout: float = 60.0
    """instances.bootTimeout (production default 10m)."""
    unhealthy_for: float = 30.0
    """instances.unhealthyFor (production default 5m)."""
    resync: float = 2.0
    """resync (production default 15s)."""

    def apply(self, spec: dict[str, Any]) -> None:
        spec.setdefault("scaleIn", {}).update(
            idleFor=self.idle_for, delayAfterScaleOut=self.delay_after_scale_out
        )
        spec.setdefault("instances", {}).update(
            staleAfter=self.stale_after,
            bootTimeout=self.boot_timeout,
            unhealthyFor=self.unhealthy_for,
        )
        spec["resync"] = self.resync


def scaled_desired_state(source: Path, timings: Timings) -> tuple[str, DesiredState]:
    """The YAML text of `source` with `timings` applied, and its validated state.

    Raises controller.spec.ConfigError, naming `source`, when the file itself is invalid.
    """
    load_desired_state(source)
    documents = [d for d in yaml.safe_load_all(source.read_text(encoding="utf-8")) if d]
    for document in documents:
        timings.apply(document["spec"])
    header = (
        f"# Derived by the sandbox from {source}: timings scaled down for a demo.\n"
        "# Edit the source file, not this one; it is rewritten on every run.\n"
    )
    text = header + yaml.safe_dump_all(documents, sort_keys=False)
    return text, parse_desired_state(text, f"{source} (scaled)")
