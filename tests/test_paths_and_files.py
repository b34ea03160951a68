"""deltamem_agents.paths (where things live, read at call time) and deltamem_agents.fileio (atomic writes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deltamem_agents import fileio, paths
from deltamem_agents.memory import default_textlog_path
from deltamem_agents.model.backbone import backbone_cache_root
from deltamem_agents.session import default_store_root


def test_the_home_variable_moves_sessions_and_the_text_log_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAMEM_HOME", str(tmp_path / "a"))
    assert default_store_root() == tmp_path / "a" / "sessions"
    assert default_textlog_path() == tmp_path / "a" / "textlog"
    monkeypatch.setenv("DELTAMEM_HOME", str(tmp_path / "b"))
    assert default_store_root() == tmp_path / "b" / "sessions"


def test_without_the_home_variable_xdg_data_home_then_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DELTAMEM_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.store_root() == tmp_path / "xdg" / "deltamem" / "sessions"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.textlog_root() == Path.home() / ".local" / "share" / "deltamem" / "textlog"


def test_the_cache_root_an_argument_then_the_variable_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAMEM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backbone_cache_root(tmp_path / "given") == tmp_path / "given" / "backbones"
    assert backbone_cache_root() == tmp_path / "cache" / "backbones"
    monkeypatch.delenv("DELTAMEM_CACHE")
    assert backbone_cache_root() == tmp_path / "xdg" / "deltamem" / "backbones"


def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "file.json"
    fileio.atomic_write_text(target, "first")
    fileio.atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "state.bin"
    fileio.atomic_write_bytes(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]
