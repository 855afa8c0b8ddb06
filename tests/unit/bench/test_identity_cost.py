"""The identity cost benchmark runs end to end on a small fleet and reports every figure."""

from __future__ import annotations

from bench.identity_cost import measure


def test_the_benchmark_reports_checks_and_registrations() -> None:
    """A run over 50 agents yields percentiles for both operations and a CPU share."""
    result = measure(agents=50, rounds=2, seed=1)
    assert result["agents"] == 50
    for operation in ("report_credential_check", "registration"):
        figures = result[operation]
        assert isinstance(figures, dict)
        assert set(figures) == {"p50_us", "p99_us", "max_us", "mean_us"}
        assert figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
