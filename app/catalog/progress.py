"""Progress of a sync: a rich bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from app.catalog.feed import Feed
from app.catalog.sync import SyncReport

PLAIN_EVERY = 5.0  # seconds between plain progress lines


def _done(report: SyncReport) -> int:
    return report.sent + report.unchanged + report.rejected_count + report.drifted_count + report.failed_count


class PlainProgress:
    def __init__(self, feed: Feed, stream: IO[str] | None = None) -> None:
        self.feed = feed
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last = self.started

    def __call__(self, report: SyncReport) -> None:
        now = time.monotonic()
        if now - self.last < PLAIN_EVERY:
            return
        self.last = now
        done = _done(report)
        rate = done / max(now - self.started, 1e-6)
        eta = ""
        total = self.feed.total_bytes
        if total and self.feed.bytes_read:
            share = min(1.0, self.feed.bytes_read / total)
            if share > 0:
                eta = f", eta {max(0.0, (now - self.started) * (1 - share) / share):.0f}s"
        print(
            f"progress: {report.rows} rows read, {report.sent} sent, {report.unchanged} unchanged, "
            f"{report.rejected_count} rejected, {rate:.0f} products/s{eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        return None


class RichProgress:
    def __init__(self, feed: Feed) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.feed = feed
        self.progress = Progress(
            TextColumn("[bold]catalog sync"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} products/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.started = time.monotonic()
        self.task: Any = self.progress.add_task("sync", total=feed.total_bytes, rate="0", counts="")
        self.progress.start()

    def __call__(self, report: SyncReport) -> None:
        rate = _done(report) / max(time.monotonic() - self.started, 1e-6)
        self.progress.update(
            self.task,
            completed=self.feed.bytes_read,
            rate=f"{rate:.0f}",
            counts=f"sent {report.sent} unchanged {report.unchanged} rejected {report.rejected_count}",
        )

    def close(self) -> None:
        self.progress.stop()


def progress_for(feed: Feed) -> PlainProgress | RichProgress:
    return RichProgress(feed) if sys.stderr.isatty() else PlainProgress(feed)
