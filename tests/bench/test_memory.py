"""PeakMemory sees a phase's peak, and forgets earlier ones when reset (Linux /proc)."""

from __future__ import annotations

import mmap

import pytest

from deltamem_agents.bench.memory import PeakMemory, available_mib, rss_mib

SIXTY_FOUR_MIB = 64 * 2**20


def _touch_and_release_64_mib() -> None:
    """Map 64 MiB, touch every page, unmap it: an anonymous mapping is given back to the kernel
    on close, unlike a freed tensor that an allocator may keep resident."""
    block = mmap.mmap(-1, SIXTY_FOUR_MIB)
    for offset in range(0, SIXTY_FOUR_MIB, mmap.PAGESIZE):
        block[offset] = 1
    block.close()


def test_the_peak_of_a_phase_is_seen_and_reset():
    peak = PeakMemory("cpu")
    if not peak.resettable:
        pytest.skip("this kernel cannot reset the peak RSS")
    peak.reset()
    _touch_and_release_64_mib()
    high = peak.peak_mib()
    assert high >= rss_mib() + 48
    peak.reset()
    assert peak.peak_mib() < high - 48
    assert "VmHWM" in peak.method and (available_mib() or 1) > 0
