"""The growth benchmark's verdict, computed from its rows alone: the goal check and each row's
speed-up over full replay at the same history length."""

from __future__ import annotations

from typing import Any

from deltamem_agents.bench.growth_config import CONDITIONS

__all__ = ["GOAL_SPEEDUP", "GOAL_SPREAD", "summarize", "with_speedups"]

GOAL_SPEEDUP, GOAL_SPREAD = 10.0, 0.05


def summarize(rows: list[dict[str, Any]], sizes: tuple[int, ...]) -> dict[str, Any]:
    """The goal check, computed from the rows: speed ratio at the largest size, memory flatness."""
    ok = {(r["condition"], r["history_tokens"]): r for r in rows if r["status"] == "ok"}
    summary: dict[str, Any] = {"goal": f"δ-mem turn >= {GOAL_SPEEDUP:g}x faster than full replay at {max(sizes):,} tokens; "
                               f"δ-mem peak memory within {GOAL_SPREAD:.0%} between {min(sizes):,} and {max(sizes):,}; full replay grows"}
    largest, smallest = max(sizes), min(sizes)
    full, delta = ok.get(("full", largest)), ok.get(("delta-mem", largest))
    if full and delta:
        summary["speedup"] = round(full["turn_ms"] / delta["turn_ms"], 2)
    small, large = ok.get(("delta-mem", smallest)), ok.get(("delta-mem", largest))
    if small and large:
        summary["delta_mem_peak_mib"] = [small["peak_mem_mib"], large["peak_mem_mib"]]
        summary["delta_mem_peak_change"] = round(large["peak_mem_mib"] / small["peak_mem_mib"] - 1, 4)
    full_small = ok.get(("full", smallest))
    if full_small and full:
        summary["full_peak_mib"] = [full_small["peak_mem_mib"], full["peak_mem_mib"]]
        summary["full_peak_growth"] = round(full["peak_mem_mib"] / full_small["peak_mem_mib"], 3)
    checks = {
        "speedup": summary.get("speedup", 0) >= GOAL_SPEEDUP if "speedup" in summary else None,
        "flat_memory": abs(summary["delta_mem_peak_change"]) <= GOAL_SPREAD if "delta_mem_peak_change" in summary else None,
        "full_grows": summary["full_peak_growth"] > 1 + GOAL_SPREAD if "full_peak_growth" in summary else None,
    }
    summary["checks"] = checks
    summary["met"] = all(checks.values()) if None not in checks.values() else None
    facts = []
    if full and delta:
        facts.append(f"at {largest:,} tokens of history a δ-mem turn took {delta['turn_ms']:,.0f} ms, full replay "
                     f"{full['turn_ms']:,.0f} ms ({summary['speedup']:g}x faster)")
    if "delta_mem_peak_change" in summary:
        a, b = summary["delta_mem_peak_mib"]
        facts.append(f"δ-mem peak memory {a:,.0f} MiB at {smallest:,} tokens, {b:,.0f} MiB at {largest:,} "
                     f"({summary['delta_mem_peak_change']:+.1%})")
    if "full_peak_growth" in summary:
        a, b = summary["full_peak_mib"]
        facts.append(f"full replay peak memory {a:,.0f} MiB, then {b:,.0f} MiB ({summary['full_peak_growth']:g}x)")
    unmeasured = sorted({(r["condition"], r["status"]) for r in rows if r["status"] != "ok"})
    if unmeasured:
        facts.append("not measured: " + ", ".join(f"{c} ({s})" for c, s in unmeasured))
    summary["headline"] = "; ".join(facts) or None
    return summary


def with_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``vs_full`` on each measured row (full replay's turn time over its own), rows in condition order."""
    full = {r["history_tokens"]: r["turn_ms"] for r in rows if r["condition"] == "full" and r["status"] == "ok"}
    for row in rows:
        if row["status"] == "ok" and row["history_tokens"] in full:
            row["vs_full"] = round(full[row["history_tokens"]] / row["turn_ms"], 2)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    return sorted(rows, key=lambda r: (order[r["condition"]], r["history_tokens"]))
