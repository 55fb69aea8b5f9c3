"""Progress of a long run: a log line at a steady interval, and a live line on a terminal.

The log line is plain text (no carriage return, no colour), one event per line, so it
reads well in syslog and the journal::

    Progress: 1,200/5,000 projects (24%), 3,456 files, 1.2 GB; 4.0 projects/s, 4.1 MB/s; ETA 15m50s

On a terminal (stderr is a tty and no log-config replaced the default handler) the same
figures are also kept on a status line at the bottom, redrawn in place; log records are
printed above it. The interval is ``[mirror] progress-interval``; the clock can be given,
so that tests need not wait.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TextIO

logger = logging.getLogger(__name__)

#: How often the live terminal line is redrawn at most.
LIVE_SECONDS = 0.2


class StatusLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler for a terminal: log records scroll above one status line kept at the bottom."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.status = ""
        #: In a forked worker: the main process's status line may be on screen, clear it first.
        self.clear_first = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "\r\x1b[K" if self.status or self.clear_first else ""
            # one write: the record above, the status line below it again
            self.stream.write(f"{prefix}{self.format(record)}{self.terminator}{self.status}")
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def set_status(self, text: str) -> None:
        """Show ``text`` as the status line ("" removes it)."""
        width = shutil.get_terminal_size().columns - 1
        with self.lock:  # type: ignore[union-attr]
            self.status = text[:width]
            self.stream.write("\r\x1b[K" + self.status)
            self.flush()


def in_worker_process() -> None:
    """Called in a forked worker: its log records clear the main process's status line first."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StatusLineHandler):
            handler.status = ""
            handler.clear_first = True


def live_handler() -> StatusLineHandler | None:
    """The terminal status line, when the log goes to one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StatusLineHandler):
            return handler
    return None


class Progress:
    """Counts the projects of one pass over ``total`` and reports at a steady interval."""

    def __init__(self, total: int, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.interval = interval
        self.clock = clock
        self.started = self._last_line = clock()
        self._last_live = float("-inf")  # the live line shows from the first project on
        self.done = 0
        self.files = 0
        self.bytes = 0
        self._live = live_handler()

    def update(self, done: int, files: int, size: int) -> None:
        """The pass has finished ``done`` projects, fetching ``files`` files of ``size`` bytes."""
        self.done, self.files, self.bytes = done, files, size
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            logger.info("Progress: %s", self.line(now))
        if self._live is not None and now - self._last_live >= LIVE_SECONDS:
            self._last_live = now
            self._live.set_status(self.line(now))

    def close(self) -> None:
        """Remove the live line (the summary says the rest)."""
        if self._live is not None:
            self._live.set_status("")

    def line(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        rate = self.done / seconds
        percent = 100 * self.done // self.total if self.total else 100
        eta = _duration((self.total - self.done) / rate) if rate else "unknown"
        return (
            f"{self.done:,}/{self.total:,} projects ({percent}%), {self.files:,} files, {human(self.bytes)}; "
            f"{rate:.1f} projects/s, {human(self.bytes / seconds)}/s; ETA {eta}"
        )


def plural(count: int, noun: str) -> str:
    """``1 project``, ``2 projects``, ``12,000 projects``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def human(size: float) -> str:
    """Bytes for people: ``512 B``, ``1.2 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
