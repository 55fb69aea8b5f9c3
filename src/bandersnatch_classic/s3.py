"""The S3 backend: a mirror kept under a prefix of a bucket on S3-compatible storage.

``[mirror] directory = /<bucket>/<prefix>``; the ``[s3]`` section names the endpoint and
the credentials (boto3's usual environment or instance profile when the keys are absent).
boto3 is an optional dependency (``pip install 'bandersnatch-classic[s3]'``), imported
only when this backend is configured.

The keys are the filesystem layout's paths under the prefix, state files included, so a
bucket copied out key by key is a mirror directory. Kill-safety comes from S3 itself: an
object appears whole, by one PUT or a completed multipart upload, or not at all. A writer
spools the bytes to a temporary file and uploads only when its block succeeds. Each
object carries its sha256 (and the upstream's mtime) in its metadata, so that ``sha256``,
``stat`` and ``write_if_changed`` cost a HEAD, not a GET.

A bucket has no links: :meth:`S3Storage.symlink` stores a server-side copy of the target
that names the target in its metadata. A copy does not follow later changes of its
target, so :meth:`S3Storage.is_link` only answers yes while the copy still holds the
target's bytes; the engine then recreates a stale one as it would a missing link.

The run lock is :class:`S3Lock`: see its docstring and docs/object-storage.md. While a run
holds it, every write request of every process of the run first checks the lock's lease
(:class:`Lease`), so a run that can no longer prove it holds the lock writes nothing more.
Every request is bounded (:class:`Limits`), so a server that stops answering fails the
run within minutes.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import posixpath
import socket
import stat as stat_module
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, BinaryIO

from .config import MirrorConfig, parse_bool
from .errors import ConfigError, LocalIOError, LockHeld, LockLost, StorageServerError
from .statefiles import LOCK
from .storage import check_relative

logger = logging.getLogger(__name__)

#: The ``[s3]`` keys handed to ``boto3.client("s3", ...)`` as they are.
CLIENT_KEYS = ("region_name", "aws_access_key_id", "aws_secret_access_key", "endpoint_url")
#: ``[s3] config_param_<name> = value``: ``botocore.config.Config(<name>=value)``, or a
#: parameter of every write call (see :func:`make_client`).
CONFIG_PARAM = "config_param_"
#: A writer keeps this much in memory before spooling to a temporary file.
SPOOL_IN_MEMORY = 8 << 20
#: Files above this size are uploaded in parts of this size (a multipart upload).
MULTIPART = 64 << 20
#: The lock object, next to the state files.
LOCK_KEY = LOCK
#: The requests that change the bucket: each is sent only while the run's lease is valid.
WRITES = frozenset({
    "PutObject", "CopyObject", "DeleteObject", "DeleteObjects", "CreateMultipartUpload", "UploadPart",
    "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload",
})
#: A lease that expired more than this many lease periods ago is stale: another run may take it.
TAKEOVER_PERIODS = 2
META_SHA256 = "sha256"
META_MTIME = "mtime"
META_LINK = "symlink"
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def split_directory(directory: str) -> tuple[str, str]:
    """``/<bucket>/<prefix>`` as ``(bucket, prefix)``; the prefix may be empty."""
    parts = [part for part in directory.strip("/").split("/") if part]
    if not parts:
        raise ConfigError("[mirror] directory must be /<bucket>/<prefix> with storage-backend = s3")
    prefix = "/".join(parts[1:])
    if prefix:
        check_relative(prefix)
    return parts[0], prefix


def _param(value: str) -> Any:
    """A ``config_param_*`` value as botocore wants it: a number or a boolean when it reads as one."""
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    with contextlib.suppress(ValueError):
        return int(lowered)
    with contextlib.suppress(ValueError):
        return float(lowered)
    return value.strip()


@dataclass(frozen=True)
class Limits:
    """How long the S3 backend waits for the storage server, and the lock's lease.

    Every request is tried at most ``retries + 1`` times (``[s3] max_attempts`` is the number
    of retries, as in the reference tool), each attempt bounded by the connect and read
    timeouts, so a server that stops answering fails a request within
    ``(retries + 1) * (connect_timeout + read_timeout)`` (plus short pauses between attempts).
    """

    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    retries: int = 2
    #: How long a lease lasts; the holder renews it every third of that.
    lease: float = 60.0

    @classmethod
    def from_parser(cls, parser: configparser.ConfigParser) -> Limits:
        """The ``[s3]`` keys ``config_param_connect_timeout``, ``config_param_read_timeout``
        (the reference tool's spelling), ``max_attempts`` and ``lock_lease_seconds``."""
        section = parser["s3"] if parser.has_section("s3") else {}

        def number(key: str, default: float, low: float) -> float:
            text = section.get(key, "").strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                value = low - 1
            if not low <= value < float("inf"):
                raise ConfigError(f"[s3] {key} = {text} is not allowed; use a number of at least {low:g}")
            return value

        retries = number("max_attempts", cls.retries, 0)
        if retries != int(retries):
            raise ConfigError(f"[s3] max_attempts = {section['max_attempts']} is not allowed; use a whole number, 0 or more")
        return cls(
            connect_timeout=number(f"{CONFIG_PARAM}connect_timeout", cls.connect_timeout, 0.1),
            read_timeout=number(f"{CONFIG_PARAM}read_timeout", cls.read_timeout, 0.1),
            retries=int(retries),
            lease=number("lock_lease_seconds", cls.lease, 1),
        )

    def stop_bound(self) -> float:
        """How long a run takes at most to stop once the server stops answering (documented):
        requests in flight time out, those started meanwhile too, then the lock's own."""
        return 2 * (self.retries + 1) * (self.connect_timeout + self.read_timeout) + 2 * self.lease

    def for_lock(self) -> Limits:
        """The lock's own requests: each done (or failed) well within a lease, so that a
        renewal can be tried again before the lease runs out."""
        return replace(
            self, connect_timeout=min(self.connect_timeout, self.lease / 4),
            read_timeout=min(self.read_timeout, self.lease / 4), retries=min(self.retries, 1),
        )

    def botocore(self) -> dict[str, Any]:
        """These limits as ``botocore.config.Config`` arguments."""
        return {
            "connect_timeout": self.connect_timeout, "read_timeout": self.read_timeout,
            "retries": {"total_max_attempts": self.retries + 1, "mode": "standard"},
        }


def make_client(parser: configparser.ConfigParser, limits: Limits) -> Any:
    """The boto3 S3 client the ``[s3]`` section describes, its requests bounded by ``limits``.

    ``config_param_<name>`` that botocore's ``Config`` knows (``connect_timeout``,
    ``max_pool_connections``...) configures the client; any other ``<name>`` is a parameter
    of S3's PutObject (``ServerSideEncryption``, ``SSEKMSKeyId``, ``StorageClass``...), which
    every object written carries, as the reference tool passes them: to PutObject,
    CreateMultipartUpload and CopyObject.
    """
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError as exc:  # config.load checks this first; kept for direct callers
        raise ConfigError("storage-backend = s3 needs boto3: pip install 'bandersnatch-classic[s3]'") from exc
    section = parser["s3"] if parser.has_section("s3") else {}
    kwargs = {key: section[key] for key in CLIENT_KEYS if section.get(key)}
    options: dict[str, Any] = {}
    write_params: dict[str, str] = {}
    for key, value in section.items():
        if key.startswith(CONFIG_PARAM):
            name = key[len(CONFIG_PARAM):]
            if name in BotoConfig.OPTION_DEFAULTS:
                options[name] = _param(value)
            else:
                write_params[name] = value.strip()
    options.update(limits.botocore())
    if section.get("signature_version"):
        options["signature_version"] = section["signature_version"]
    try:
        client = boto3.session.Session().client("s3", config=BotoConfig(**options), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[s3] {exc}") from exc
    _add_write_params(client, write_params)
    return client


#: The write calls ``config_param_*`` parameters go to.
WRITE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")
#: PutObject parameters this tool sets itself.
OWN_PARAMETERS = frozenset({"Body", "Bucket", "Key", "Metadata", "IfMatch", "IfNoneMatch", "ContentLength", "ContentMD5"})



def _add_write_params(client: Any, params: dict[str, str]) -> None:
    """Have every write call of ``client`` carry ``params`` (checked against S3's PutObject)."""
    if not params:
        return
    model = client.meta.service_model
    put = model.operation_model("PutObject").input_shape.members
    typed: dict[str, Any] = {}
    for name, value in params.items():
        if name not in put or name in OWN_PARAMETERS:
            raise ConfigError(
                f"[s3] {CONFIG_PARAM}{name} is neither an option of botocore's Config nor a PutObject "
                "parameter this tool leaves to the config (e.g. config_param_ServerSideEncryption = AES256)"
            )
        kind = put[name].type_name
        if kind == "boolean":
            typed[name] = parse_bool(value, f"[s3] {CONFIG_PARAM}{name}", False)
        elif kind in ("integer", "long"):
            typed[name] = _param(value)
        else:
            typed[name] = value
    for operation in WRITE_OPERATIONS:
        members = model.operation_model(operation).input_shape.members
        extra = {name: value for name, value in typed.items() if name in members}

        def add(params: dict[str, Any], extra: dict[str, Any] = extra, **_: Any) -> None:
            for name, value in extra.items():
                params.setdefault(name, value)

        client.meta.events.register(f"before-parameter-build.s3.{operation}", add)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class _SpoolFile:
    """What :meth:`S3Storage.writer` yields: writes go to the spool and into the digest."""

    __slots__ = ("_fh", "_display", "digest")

    def __init__(self, fh: BinaryIO, display: str) -> None:
        self._fh = fh
        self._display = display
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise LocalIOError.of(f"{self._display} (spooling to a temporary file)", exc) from exc


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


class S3Storage:
    """A mirror under ``s3://<bucket>/<prefix>/``: the :class:`~.storage.Storage` interface."""

    def __init__(
        self, bucket: str, prefix: str, client_factory: Callable[[Limits], Any], limits: Limits | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._base = f"{prefix}/" if prefix else ""
        self._factory = client_factory
        self.limits = limits or Limits()
        #: Created before any worker is forked, so that every process of the run shares it.
        self.lease = Lease()
        #: The lock this run holds (in its main process), to tell how it was lost.
        self.holder: S3Lock | None = None
        #: One client per process: a forked worker makes its own (never shares a socket).
        self._clients: dict[int, Any] = {}
        self._client_lock = threading.Lock()
        self._endpoint = ""
        #: Set during a run when the server stopped answering (after the retries), in shared
        #: memory: the later requests of every process of the run fail at once instead of
        #: each waiting out the timeouts again.
        self._down = multiprocessing.Array("c", 400)
        #: The HEAD that this thread's last :meth:`stat` made, for the :meth:`sha256` of the
        #: same path that callers (the engine, verify) ask next: one HEAD for both.
        self._last_head = threading.local()

    @classmethod
    def from_config(cls, config: MirrorConfig, parser: configparser.ConfigParser) -> S3Storage:
        """The storage ``[mirror] directory`` and ``[s3]`` describe, once the bucket answered a HEAD."""
        bucket, prefix = split_directory(str(config.directory))
        storage = cls(bucket, prefix, lambda limits: make_client(parser, limits), Limits.from_parser(parser))
        storage.check_bucket()
        return storage

    @property
    def client(self) -> Any:
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            with self._client_lock:
                client = self._clients.get(pid)
                if client is None:
                    client = self._factory(self.limits)
                    client.meta.events.register("before-send.s3", self._before_send)
                    self._endpoint = client.meta.endpoint_url
                self._clients = {pid: client}
        return client

    def lock_client(self) -> Any:
        """A client for the lock's requests: its own connections, and timeouts within a lease."""
        return self._factory(self.limits.for_lock())

    @property
    def server(self) -> str:
        """How messages name the storage server."""
        return f"S3 storage server at {self._endpoint or self.client.meta.endpoint_url}"

    def _before_send(self, event_name: str, **_: Any) -> None:
        """Called by botocore before every attempt of every request: refuse a write once the
        lease is lost, and every request once the server stopped answering in this run."""
        down = self.down()
        if down:
            raise StorageServerError(f"{self.server}: not answering ({down})")
        if event_name.rpartition(".")[2] in WRITES:
            lost = self.lock_lost()
            if lost is not None:
                raise lost

    def lock_lost(self) -> LockLost | None:
        """Why this run can no longer prove that it holds the lock; None while it can (or holds none).

        In the main process, which holds the lock, a lease that ran out is told apart from
        one taken over by reading the lock object once (:meth:`S3Lock.verdict`).
        """
        state = self.lease.state()
        if state >= 0:
            return None
        holder = self.holder
        if holder is not None and holder.pid == os.getpid():
            return holder.verdict()
        return self.lost(state)

    def lost(self, state: float, detail: str = "") -> LockLost:
        """The one line for a lease lost in ``state``: taken over, or ran out (``detail``: what else is known)."""
        lock = self.display(LOCK_KEY)
        if state == Lease.TAKEN:
            return LockLost(
                f"{self.server}: the lock {lock} was taken over by another run{f' ({detail})' if detail else ''} "
                "while this run's lease was not renewed; this run stopped and wrote nothing more"
            )
        return LockLost(
            f"{self.server}: the lease on the lock {lock} ran out ({self.limits.lease:g} s without a renewal: "
            f"this run was stalled or the server did not answer{f'; {detail}' if detail else ''}), so another "
            "run may take the lock over; this run stopped and wrote nothing more"
        )

    def _forget(self) -> None:
        """Drop the HEAD :meth:`stat` kept: this thread is changing the bucket."""
        self._last_head.value = None

    def key(self, rel: str) -> str:
        return f"{self._base}{check_relative(rel)}"

    def display(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def _error(self, rel: str, exc: Exception, trip: bool = True) -> StorageServerError:
        """A failed request as the error a storage failure is: the run stops and keeps its todo.

        A server that did not answer (after the retries) during a run makes the later
        requests of every process of the run fail at once (``trip``; not for the lock's own).
        """
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError

        if trip and isinstance(exc, (BotoConnectionError, HTTPClientError)) and self.lease.state() != Lease.FREE:
            with self._down.get_lock():
                if not self._down.value:
                    self._down.value = str(exc).encode("utf-8", "replace")[: len(self._down) - 1]
        return StorageServerError(f"{self.server}: {self.display(rel)}: {exc}")

    def down(self) -> str:
        """Why the server counts as not answering in this run (the first such error), or ""."""
        with self._down.get_lock():
            return self._down.value.decode("utf-8", "replace")

    def check_bucket(self) -> None:
        """Pre-flight: one HEAD of the bucket; a clear configuration error when it does not answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigError(f"the bucket {self.bucket!r} of [mirror] directory is not reachable: {exc}") from exc

    def _request(self, rel: str, call: Callable[..., Any], **kwargs: Any) -> Any:
        """``call`` for ``rel``'s key; FileNotFoundError for a missing key, StorageServerError otherwise."""
        return self.send(rel, call, kwargs)

    def send(self, rel: str, call: Callable[..., Any], kwargs: dict[str, Any], trip: bool = True) -> Any:
        """:meth:`_request`; ``trip``: see :meth:`_error`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(Bucket=self.bucket, Key=self.key(rel), **kwargs)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                raise FileNotFoundError(self.display(rel)) from exc
            raise self._error(rel, exc, trip) from exc
        except BotoCoreError as exc:
            raise self._error(rel, exc, trip) from exc

    def head(self, rel: str) -> dict[str, Any] | None:
        """The HEAD of ``rel``'s object, or None when there is none."""
        try:
            return self._request(rel, self.client.head_object)
        except FileNotFoundError:
            return None

    @staticmethod
    def _metadata(sha256: str, mtime: datetime | None) -> dict[str, str]:
        meta = {META_SHA256: sha256}
        if mtime is not None:
            meta[META_MTIME] = repr(mtime.timestamp())
        return meta

    # -- reading -------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        body = self._request(rel, self.client.get_object)["Body"]
        with contextlib.closing(body):
            yield body

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as fh:
            return fh.read()

    def read_text(self, rel: str) -> str | None:
        try:
            return self.read_bytes(rel).decode("utf-8")
        except FileNotFoundError:
            return None

    def sha256(self, rel: str) -> str | None:
        """From the object's metadata (a HEAD, or the one :meth:`stat` just made); the bytes
        are read only when it has none."""
        last = getattr(self._last_head, "value", None)
        self._last_head.value = None
        head = last[1] if last is not None and last[0] == rel else self.head(rel)
        if head is None:
            return None
        stored = head.get("Metadata", {}).get(META_SHA256)
        return stored if stored else self.read_sha256(rel)

    def read_sha256(self, rel: str) -> str | None:
        """The sha256 of the object's bytes, read whole (``verify --read``'s check)."""
        digest = hashlib.sha256()
        try:
            with self.open(rel) as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def stat(self, rel: str) -> os.stat_result | None:
        head = self.head(rel)
        self._last_head.value = (rel, head)
        if head is None:
            return None
        stored = head.get("Metadata", {}).get(META_MTIME)
        mtime = float(stored) if stored else head["LastModified"].timestamp()
        size = int(head["ContentLength"])
        return os.stat_result((stat_module.S_IFREG | 0o644, 0, 0, 1, 0, 0, size, mtime, mtime, mtime))

    def exists(self, rel: str) -> bool:
        """An object at ``rel``, or any below it (a "directory")."""
        if self.head(rel) is not None:
            return True
        listing = self._request(rel, lambda Bucket, Key: self.client.list_objects_v2(Bucket=Bucket, Prefix=f"{Key}/", MaxKeys=1))
        return bool(listing.get("KeyCount"))

    def files(self, rel: str) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every object below ``rel``."""
        from botocore.exceptions import BotoCoreError, ClientError

        cut = len(self._base)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.key(rel)}/")
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][cut:], int(item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error(rel, exc) from exc

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, rel: str, mtime: datetime | None = None) -> Iterator[BinaryIO]:
        """Yield a file for ``rel``'s new content; the object is uploaded, whole, only on success."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        self._forget()
        key = self.key(rel)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            sink = _SpoolFile(spool, self.display(rel))  # type: ignore[arg-type]
            yield sink  # type: ignore[misc]  # write() is all a writer needs
            spool.seek(0)
            transfer = TransferConfig(multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, max_concurrency=4)
            try:
                self.client.upload_fileobj(
                    spool, self.bucket, key,
                    ExtraArgs={"Metadata": self._metadata(sink.digest.hexdigest(), mtime)}, Config=transfer,
                )
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                raise self._error(rel, exc) from exc

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None:
        self._forget()
        meta = self._metadata(hashlib.sha256(data).hexdigest(), mtime)
        self._request(rel, self.client.put_object, Body=data, Metadata=meta)

    def write_if_changed(self, rel: str, data: bytes) -> bool:
        """Write ``data`` unless the object's stored sha256 says it holds exactly it (one HEAD)."""
        digest = hashlib.sha256(data).hexdigest()
        if self.sha256(rel) == digest:
            return False
        self._forget()
        self._request(rel, self.client.put_object, Body=data, Metadata=self._metadata(digest, None))
        return True

    def delete(self, rel: str) -> bool:
        self._forget()
        if self.head(rel) is None:
            return False
        self._request(rel, self.client.delete_object)
        return True

    def delete_tree(self, rel: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self._forget()
        keys = [f"{self._base}{path}" for path, _size in self.files(rel)]
        try:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": key} for key in keys[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise self._error(rel, exc) from exc
        return bool(keys)

    def symlink(self, rel: str, target_name: str) -> None:
        """A server-side copy of the target (whole, like any object) that names it in its metadata."""
        self._forget()
        target = check_relative(posixpath.normpath(f"{posixpath.dirname(rel)}/{target_name}"))
        head = self.head(target)
        if head is None:
            raise LocalIOError(f"{self.display(rel)}: link target {target} does not exist")
        meta = {**head.get("Metadata", {}), META_LINK: target_name}
        source = {"Bucket": self.bucket, "Key": self.key(target)}
        self._request(rel, self.client.copy_object, CopySource=source, Metadata=meta, MetadataDirective="REPLACE")

    def is_link(self, rel: str) -> bool:
        """Whether ``rel`` is a link copy that still holds its target's bytes (see the module)."""
        head = self.head(rel)
        target_name = head.get("Metadata", {}).get(META_LINK) if head else None
        if not target_name or head is None:
            return False
        target = check_relative(posixpath.normpath(f"{posixpath.dirname(rel)}/{target_name}"))
        return self.sha256(target) == head["Metadata"].get(META_SHA256)

    def remove_empty_dirs(self, rel: str, keep_top: bool = False) -> None:
        check_relative(rel)  # a bucket has no directories

    # -- the run lock --------------------------------------------------------------------
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The run lock: a leased lock object (:class:`S3Lock`)."""
        return S3Lock(self)

    def abort_stale_uploads(self) -> int:
        """Abort the multipart uploads under the prefix that killed runs left unfinished.

        Only called with the lock held: no other run uploads under the prefix then.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        aborted = 0
        try:
            listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._base)
            for upload in listing.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        except (BotoCoreError, ClientError) as exc:
            logger.warning("Could not list or abort unfinished uploads under %s: %s", self.display(LOCK_KEY), exc)
        return aborted


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
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in CONFLICT:
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
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in CONFLICT:
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
            return self.storage.lost(Lease.TAKEN)
        down = self.storage.down()
        if down:  # asking would only wait out the timeouts again
            return self.storage.lost(Lease.EXPIRED, f"the server stopped answering: {down}")
        try:
            etag, info, _answer = self._read()
        except FileNotFoundError:
            lease.lose(Lease.TAKEN)
            return self.storage.lost(Lease.TAKEN, "which has released it since")
        except StorageServerError as exc:
            return self.storage.lost(Lease.EXPIRED, f"reading the lock failed too: {exc}")
        if etag != self.etag:
            lease.lose(Lease.TAKEN)
            return self.storage.lost(Lease.TAKEN, f"held by {info.get('owner', 'an unreadable lock object')}")
        return self.storage.lost(Lease.EXPIRED)

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

    def __enter__(self) -> None:
        self.acquire()
        aborted = self.storage.abort_stale_uploads()
        if aborted:
            logger.info("Aborted %d unfinished uploads that a killed run left", aborted)
        self._thread = threading.Thread(target=self._renew_loop, name="s3-lease", daemon=True)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self.release()
