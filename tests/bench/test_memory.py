"""PeakMemory sees a phase's peak, and forgets earlier ones when reset (Linux /proc)."""

from __future__ import annotations

import pytest
import torch

from deltamem_agents.bench.memory import PeakMemory, available_mib, rss_mib


def test_the_peak_of_a_phase_is_seen_and_reset():
    peak = PeakMemory("cpu")
    if not peak.resettable:
        pytest.skip("this kernel cannot reset the peak RSS")
    peak.reset()
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del big
    high = peak.peak_mib()
    assert high >= rss_mib() + 48
    peak.reset()
    assert peak.peak_mib() < high - 48
    assert "VmHWM" in peak.method and (available_mib() or 1) > 0
