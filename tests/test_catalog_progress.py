"""Progress off a terminal: plain lines with counts, rate and ETA, never terminal escape codes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from app.catalog import progress as progress_module
from app.catalog.feed import open_feed
from app.catalog.progress import PlainProgress, progress_for
from app.catalog.sync import SyncReport


def test_plain_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"id": "a"}\n' * 100)
    with open_feed(str(path)) as feed:
        out = io.StringIO()
        shown = PlainProgress(feed, out)
        monkeypatch.setattr(progress_module, "PLAIN_EVERY", 0.0)
        rows = iter(feed)
        for _ in range(50):
            next(rows)
        shown(SyncReport(prices_include_tax=True, rows=50, sent=40, unchanged=5))
        line = out.getvalue()
    assert line.startswith("progress: 50 rows read, 40 sent, 5 unchanged, 0 rejected, ")
    assert "products/s" in line
    assert ", eta " in line
    assert "\x1b" not in line


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text("")
    with open_feed(str(path)) as feed:
        assert isinstance(progress_for(feed), PlainProgress)  # pytest captures stderr: not a terminal
