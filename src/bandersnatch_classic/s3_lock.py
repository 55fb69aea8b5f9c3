"""The run lock of a mirror in a bucket: :class:`S3Lock`, a leased lock object, and the
:class:`Lease` every process of the run checks before each write (see docs/object-storage.md).

A run that can no longer prove that it holds the lock writes nothing more: every write
request of :class:`~.s3.S3Storage` first asks the lease (:meth:`~.s3.S3Storage.lock_lost`),
and :func:`lease_lost` is the one line that says why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import LocalIOError, LockHeld, LockLost, StorageServerError
from .statefiles import LOCK

if TYPE_CHECKING:
    from .s3 import S3Storage

logger = logging.getLogger(__name__)

#: The lock object, next to the state files.
LOCK_KEY = LOCK
#: A lease that expired more than this many lease periods ago is stale: another run may take it.
TAKEOVER_PERIODS = 2
#: The error codes of a conditional request whose condition failed.
CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})



def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class Lease:
    """Until when this run may write, as every process of the run sees it.

    One number in shared memory, which forked workers inherit: while the run holds the
    lock, the ``time.monotonic()`` (one clock for all processes of a host) until which
    the lock's last renewal proves the lock ours; else one of the states below. The
    lock's thread in the main process extends it. Once it has run out, or the lock was
    taken over, it stays lost: a run that could not prove the lock its own never writes
    again, even if a late renewal gets through.
    """

    #: No lock held by this run: writes are not checked (``status``, ``serve``).
    FREE = 0.0
    #: Another run took the lock over.
    TAKEN = -1.0
    #: The lease ran out before a renewal got through.
    EXPIRED = -2.0

    def __init__(self) -> None:
        self._value = multiprocessing.Value("d", self.FREE)

    def state(self) -> float:
        """:data:`FREE`, :data:`TAKEN`, :data:`EXPIRED`, or the (positive) deadline while valid."""
        with self._value.get_lock():
            value = self._value.value
            if value > 0 and time.monotonic() >= value:
                value = self._value.value = self.EXPIRED
            return value

    def extend(self, until: float) -> bool:
        """Valid until ``until``; False, and nothing changed, once the lease is lost."""
        with self._value.get_lock():
            if self.state() < 0:
                return False
            self._value.value = until
            return True

    def lose(self, state: float) -> None:
        """Mark the lease lost (:data:`TAKEN` is the more specific and wins over :data:`EXPIRED`)."""
        with self._value.get_lock():
            if state == self.TAKEN or self._value.value >= 0:
                self._value.value = state

    def free(self) -> None:
        """The run released the lock: back to unchecked, unless it was lost."""
        with self._value.get_lock():
            if self._value.value > 0:
                self._value.value = self.FREE


def lease_lost(storage: S3Storage, state: float, detail: str = "") -> LockLost:
    """The one line for a lease lost in ``state``: taken over, or ran out (``detail``: what else is known)."""
    lock = storage.display(LOCK_KEY)
    if state == Lease.TAKEN:
        return LockLost(
            f"{storage.server}: the lock {lock} was taken over by another run{f' ({detail})' if detail else ''} "
            "while this run's lease was not renewed; this run stopped and wrote nothing more"
        )
    return LockLost(
        f"{storage.server}: the lease on the lock {lock} ran out ({storage.limits.lease:g} s without a renewal: "
        f"this run was stalled or the server did not answer{f'; {detail}' if detail else ''}), so another "
        "run may take the lock over; this run stopped and wrote nothing more"
    )


def _died_here(info: dict[str, Any]) -> bool:
    """Whether a lock's holder ran on this host and no process of its run is left.

    A killed run's forked workers can outlive its main process and go on writing, so the
    test is its whole process group (recorded in the lock), not its pid. A lock of this
    run's own process group, or without one, is left to the lease rule: its members
    cannot be told apart from ours.
    """
    if info.get("host") != socket.gethostname():
        return False
    try:
        pgid = int(info["pgid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pgid <= 1 or pgid == os.getpgid(0):
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, but another user's
        return False
    return False


class S3Lock:
    """The run lock on a bucket, across machines: a lock object created only if absent.

    Acquire: a PUT of ``<prefix>/.lock`` with ``If-None-Match: *``, which S3 lets only one
    writer win. The object holds who holds it (host, pid, process group) and until when
    (``expires``, a lease of :attr:`Limits.lease`); a background thread renews the lease
    every third of it with a PUT conditional on the object's ETag (``If-Match``), so a
    holder notices when its lock was taken over.

    Every renewal that gets through extends the run's :class:`Lease` to a lease after the
    renewal was sent; every write of the run checks it first. So a holder writes nothing
    once its lease has run out unrenewed, and another run takes the lock over only
    :data:`TAKEOVER_PERIODS` lease periods after that: a lease that expired that long ago
    belongs to a run that died or stalled, and so does one whose holder ran on this host
    as a process group that no longer exists. The stale object is deleted only if
    unchanged (``If-Match`` on its ETag), then created again conditionally, so of two runs
    taking it over at once only one wins. Release: a DELETE conditional on our ETag.
    """

    def __init__(self, storage: S3Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.lease = storage.limits.lease
        self.clock = clock
        self.pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex}"
        self.etag: str | None = None
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._verdict: LockLost | None = None
        self._verdict_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.storage.lock_client()
        return self._client

    def _send(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        return self.storage.send(LOCK_KEY, call, kwargs, trip=False)

    def _body(self) -> bytes:
        now = self.clock()
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": self.pid, "pgid": os.getpgid(0),
            "acquired": now, "expires": now + self.lease,
        }).encode()

    def _put(self, **condition: str) -> bool:
        """A conditional PUT of the lock object; False when the condition failed."""
        from botocore.exceptions import ClientError

        try:
            answer = self._send(self.client.put_object, Body=self._body(), **condition)
        except StorageServerError as exc:
            if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) in CONFLICT:
                return False
            raise
        self.etag = answer["ETag"]
        return True

    def acquire(self) -> None:
        sent = time.monotonic()
        if not self._put(IfNoneMatch="*"):
            held = self._held()
            if held is not None:
                raise LockHeld(f"another run holds {self.storage.display(LOCK_KEY)} ({held}); not starting a second one")
            sent = time.monotonic()
            if not self._put(IfNoneMatch="*"):
                raise LockHeld(f"another run took over {self.storage.display(LOCK_KEY)} first; not starting a second one")
        self.storage.lease.extend(sent + self.lease)
        self.storage.holder = self

    def _read(self) -> tuple[str, dict[str, Any], Any]:
        """The lock object's ETag, its body (empty when unreadable) and its answer; FileNotFoundError when absent."""
        answer = self._send(self.client.get_object)
        try:
            info = json.loads(answer["Body"].read())
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            info = {}
        return answer["ETag"], info, answer

    def _held(self) -> str | None:
        """Who holds the lock, or None after deleting a stale one (or finding it gone)."""
        from botocore.exceptions import ClientError

        try:
            etag, info, answer = self._read()
        except FileNotFoundError:
            return None
        try:
            holder, expires = str(info["owner"]), float(info["expires"])
        except (KeyError, TypeError, ValueError):
            holder, expires = "unreadable lock object", answer["LastModified"].timestamp() + self.lease
        overdue = self.clock() - expires
        if _died_here(info):
            logger.warning(
                "Taking over the lock of %s: no process of its run (process group %s) is left on this host",
                holder, info.get("pgid"),
            )
        elif overdue <= TAKEOVER_PERIODS * self.lease:
            return f"held by {holder}, lease until {datetime.fromtimestamp(expires).isoformat(timespec='seconds')}"
        else:
            logger.warning("Taking over the lock of %s: its lease expired %.0fs ago", holder, overdue)
        try:
            self._send(self.client.delete_object, IfMatch=etag)
        except StorageServerError as exc:
            if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) in CONFLICT:
                return f"renewed or taken over by another run while we looked ({holder})"
            raise
        return None

    def renew(self) -> bool:
        """Extend the lease (If-Match our ETag); False once it is lost: taken over, or run out first."""
        lease = self.storage.lease
        if self.etag is None or lease.state() < 0:
            return False
        sent = time.monotonic()
        try:
            ours = self._put(IfMatch=self.etag)
        except FileNotFoundError:  # deleted under us: as good as taken over
            ours = False
        if not ours:
            logger.warning("The lock %s was taken over by another run", self.storage.display(LOCK_KEY))
            lease.lose(Lease.TAKEN)
            return False
        return lease.extend(sent + self.lease)

    def verdict(self) -> LockLost:
        """How the lease was lost, the lock object read once to tell a lease that ran out
        from one taken over (a renewal may not have told yet)."""
        with self._verdict_lock:
            if self._verdict is None:
                self._verdict = self._judge()
            return self._verdict

    def _judge(self) -> LockLost:
        lease = self.storage.lease
        if lease.state() == Lease.TAKEN:
            return lease_lost(self.storage, Lease.TAKEN)
        down = self.storage.down()
        if down:  # asking would only wait out the timeouts again
            return lease_lost(self.storage, Lease.EXPIRED, f"the server stopped answering: {down}")
        try:
            etag, info, _answer = self._read()
        except FileNotFoundError:
            lease.lose(Lease.TAKEN)
            return lease_lost(self.storage, Lease.TAKEN, "which has released it since")
        except StorageServerError as exc:
            return lease_lost(self.storage, Lease.EXPIRED, f"reading the lock failed too: {exc}")
        if etag != self.etag:
            lease.lose(Lease.TAKEN)
            return lease_lost(self.storage, Lease.TAKEN, f"held by {info.get('owner', 'an unreadable lock object')}")
        return lease_lost(self.storage, Lease.EXPIRED)

    def _renew_loop(self) -> None:
        pause = self.lease / 3
        while not self._stop.wait(pause):
            try:
                if not self.renew():
                    return
                pause = self.lease / 3
            except LocalIOError as exc:  # tried again soon, until the lease runs out
                logger.warning("Could not renew the lease of the lock %s: %s", self.storage.display(LOCK_KEY), exc)
                pause = self.lease / 12

    def release(self) -> None:
        """Stop renewing and delete the lock object if it is still ours. With the server not
        answering, neither waits: the lock stays, and the next run takes it over by the rules."""
        down = self.storage.down()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=0 if down else None)
        lease = self.storage.lease
        if self.etag is not None and lease.state() != Lease.TAKEN and not down:  # If-Match: only while still ours
            with contextlib.suppress(LocalIOError, FileNotFoundError):
                self._send(self.client.delete_object, IfMatch=self.etag)
        lease.free()
        self.storage.holder = None
        self.etag = None

    def _abort_stale_uploads(self) -> int:
        """Abort the multipart uploads under the prefix that killed runs left unfinished.

        Only called with the lock held: no other run uploads under the prefix then.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        aborted = 0
        try:
            listing = self.storage.client.list_multipart_uploads(Bucket=self.storage.bucket, Prefix=self.storage.key_prefix)
            for upload in listing.get("Uploads", []):
                self.storage.client.abort_multipart_upload(Bucket=self.storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        except (BotoCoreError, ClientError) as exc:
            logger.warning("Could not list or abort unfinished uploads under %s: %s", self.storage.display(LOCK_KEY), exc)
        return aborted

    def __enter__(self) -> None:
        self.acquire()
        aborted = self._abort_stale_uploads()
        if aborted:
            logger.info("Aborted %d unfinished uploads that a killed run left", aborted)
        self._thread = threading.Thread(target=self._renew_loop, name="s3-lease", daemon=True)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.release()
