"""Exception classes, one per way a run can go wrong.

The CLI maps them to exit codes (DESIGN.md section 6): configuration problems exit 2,
lock contention exits 3, and per-project failures are collected and make the run exit 1.
"""


class BandersnatchError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BandersnatchError):
    """The configuration file is missing, unreadable or holds a bad value (exit 2)."""


class LockHeld(BandersnatchError):
    """Another run holds the mirror's lock (exit 3)."""


class UnsafePath(BandersnatchError):
    """Upstream data would make us write outside the mirror directory."""


class UpstreamError(BandersnatchError):
    """The upstream answered with an error, or not at all, after every retry."""


class ProjectGone(UpstreamError):
    """The upstream says the project does not exist (HTTP 404 on its JSON page)."""


class StaleResponse(UpstreamError):
    """The upstream keeps serving a page older than the serial it announced."""


class NotServed(UpstreamError):
    """The upstream answered 404 or 410 for a file it had advertised."""


class HashMismatch(UpstreamError):
    """A downloaded file's digest differs from the one the upstream published."""


class StateError(BandersnatchError):
    """The mirror's state files are unusable (e.g. an unknown generation)."""
