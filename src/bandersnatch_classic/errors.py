"""Exception classes, one per way a run can go wrong, and the exit statuses they map to.

Every command exits with one of the ``EXIT_*`` statuses below, one meaning each (see
docs/operations.md, "Exit status"); :func:`exit_status_of` maps an exception to its
status: configuration and environment problems exit 2, lock contention 3, an unusable
upstream 4, a local I/O error, a storage server error or a lost storage lock during a
run 5, anything the code does not expect (a bug) 70; per-project failures are collected
and make the run exit 1.
"""

from __future__ import annotations

import errno
import os

#: Everything done (``status``: the mirror is healthy).
EXIT_OK = 0
#: Some projects failed (``status``: the mirror is unhealthy; ``verify``: problems found).
EXIT_FAILED = 1
#: Configuration, environment or usage error, nothing touched (``status``: not a mirror).
EXIT_USAGE = 2
#: Another run holds the mirror's lock.
EXIT_LOCKED = 3
#: The upstream is unusable.
EXIT_UPSTREAM = 4
#: A local I/O error, a storage server error or a lost storage lock stopped the run.
EXIT_LOCAL_IO = 5
#: A first run wrote the default config.
EXIT_NEW_CONFIG = 6
#: EX_SOFTWARE: an internal error (a bug), logged with its traceback.
EXIT_INTERNAL = 70
#: 128 + SIGINT, as a shell reports an interrupted command.
EXIT_INTERRUPTED = 130


class BandersnatchError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BandersnatchError):
    """The configuration, the command line or the machine around the mirror is unusable (exit 2).

    Raised before anything is written: a bad value, a missing or unwritable directory,
    an unreadable state file, a log-config that does not parse.
    """


class LockHeld(BandersnatchError):
    """Another run holds the mirror's lock (exit 3)."""


class UnsafePath(BandersnatchError):
    """Upstream data would make us write outside the mirror directory."""


class UpstreamError(BandersnatchError):
    """The upstream answered with an error, or not at all, after every retry.

    Raised for one project, it fails that project; raised while asking what changed, the
    upstream is unusable for this run (exit 4).
    """


class ProjectGone(UpstreamError):
    """The upstream says the project does not exist (HTTP 404 on its JSON page)."""


class StaleResponse(UpstreamError):
    """The upstream keeps serving a page older than the serial it announced."""


class NotServed(UpstreamError):
    """The upstream answered 404 or 410 for a file it had advertised."""


class HashMismatch(UpstreamError):
    """A downloaded file's digest differs from the one the upstream published."""


class UnusableEntry(UpstreamError):
    """One entry of the upstream cannot be mirrored: a name or file name longer than a file
    name can be, a document over ``max-document-size`` or nested too deeply to parse.

    The upstream's fault, never the local disk's: it fails that project only (exit 1).
    """


class RedirectRefused(UpstreamError):
    """The upstream redirected an https request to plain http (``allow-non-https`` is off)."""


class MethodUnavailable(UpstreamError):
    """The upstream does not offer this discovery method: it answers 404 or 405, not JSON,
    or not XML-RPC. ``api-method = auto`` then tries the next method."""


class UpstreamKnowsNone(UpstreamError):
    """Every project a run asked for was answered with 404: a wrong ``master`` or allowlist,
    or a proxy that does not forward the JSON API (exit 4)."""


class UnsafeListing(UpstreamError):
    """The upstream's listing would remove too much of the mirror at once (exit 4)."""


class StateError(BandersnatchError):
    """The mirror's state files are unusable (e.g. an unknown generation)."""


class DamagedState(StateError):
    """A state file holds what no run writes: bytes that are not UTF-8, a truncated
    document, an impossible value (docs/operations.md, "Damaged state").

    ``mirror`` repairs each kind in its own way and says how (:meth:`named`); a command
    that cannot repair it stops with exit 2 and this message, which names the fix.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path} {problem}; run `bandersnatch mirror`, which repairs it")

    def named(self, action: str) -> str:
        """The one line for this damage: the file, what is wrong, and ``action``."""
        return f"{self.path} {self.problem}; {action}"


class LocalIOError(BandersnatchError):
    """A local file could not be read or written (disk full, permission, read-only file system).

    Raised by the storage layer for its own system calls, never for the network's, so a
    disk error is neither retried nor blamed on the upstream. A run stops starting new
    work when it meets one, keeps its ``todo``, and exits 5.
    """

    #: How the CLI's one line starts (see :func:`~bandersnatch_classic.cli.exit_status`).
    headline = "Local I/O error"

    @classmethod
    def of(cls, path: str, error: OSError) -> LocalIOError:
        """The error for ``error`` met on ``path``: one line, naming the user for permission errors."""
        reason = error.strerror or str(error)
        if error.errno in (errno.EACCES, errno.EPERM):
            reason += f" (running as user {effective_user()})"
        return cls(f"{path}: {reason}")


class StorageServerError(LocalIOError):
    """The storage server (S3) failed a request after its retries, or did not answer in time (exit 5).

    Like a local disk error, it stops the run (the storage is where everything goes), but
    its line names the server: ``S3 storage server at <endpoint>: <what>``.
    """

    headline = "Storage server error"


class LockLost(StorageServerError):
    """The run can no longer prove that it holds the storage's lock (exit 5).

    Its lease was taken over by another run, or it ran out before a renewal got through.
    The storage refuses every write from then on, in every process of the run.
    """

    headline = "Lock lost"


class PlantedLink(LocalIOError):
    """A symbolic link below the mirror directory where the tool writes or deletes (exit 5).

    Nothing this tool writes below the mirror directory is reached through a link (the
    directory itself may be one): a link there was planted by whoever else can write the
    tree, or left by a setup that moved part of the mirror elsewhere. Either way, following
    it would write or delete outside the mirror, so the run stops and names it.
    """

    @classmethod
    def at(cls, path: str, action: str) -> PlantedLink:
        """The error for a link found at ``path`` while trying to ``action`` through it."""
        return cls(
            f"{path} is a symbolic link; refusing to {action} through it "
            "(someone planted it, or the mirror was set up with links): remove it"
        )


class WorkerBug(Exception):
    """An exception a worker did not expect (a bug) while syncing a project: the run stopped
    starting new work, kept what was done, and exits 70. Not a :class:`BandersnatchError`:
    nothing raises it on purpose. ``details`` is the worker's traceback, which may come
    from another process."""

    def __init__(self, name: str, details: str) -> None:
        self.name, self.details = name, details
        super().__init__(f"a worker met an unexpected error{f' while syncing {name}' if name else ''}")


def exit_status_of(exc: BaseException) -> int:
    """The exit status a command ends with when ``exc`` stops it."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (ConfigError, StateError)):
        return EXIT_USAGE
    if isinstance(exc, LockHeld):
        return EXIT_LOCKED
    if isinstance(exc, LocalIOError):
        return EXIT_LOCAL_IO
    if isinstance(exc, UpstreamError):
        return EXIT_UPSTREAM
    if isinstance(exc, BandersnatchError):
        return EXIT_FAILED
    return EXIT_INTERNAL


def effective_user() -> str:
    """The name of the user this process acts as (for error messages), else its uid."""
    uid = os.geteuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"
