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

The run lock is :class:`~.s3_lock.S3Lock` (in :mod:`.s3_lock`, with its lease): see docs/object-storage.md.
While a run holds it, every write request of every process of the run first checks the lock's
lease (:class:`~.s3_lock.Lease`), so a run that can no longer prove it holds the lock writes
nothing more.
Every request is bounded (:class:`Limits`), so a server that stops answering fails the
run within minutes.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import logging
import multiprocessing
import os
import posixpath
import stat as stat_module
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, BinaryIO

from .config import MirrorConfig, parse_bool
from .errors import ConfigError, LocalIOError, LockLost, StorageServerError
from .s3_lock import Lease, S3Lock, error_code, lease_lost
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
#: The requests that change the bucket: each is sent only while the run's lease is valid.
WRITES = frozenset({
    "PutObject", "CopyObject", "DeleteObject", "DeleteObjects", "CreateMultipartUpload", "UploadPart",
    "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload",
})
META_SHA256 = "sha256"
META_MTIME = "mtime"
META_LINK = "symlink"
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


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


def _metadata(sha256: str, mtime: datetime | None) -> dict[str, str]:
    """What an object carries beside its bytes: their sha256, and the upstream's mtime."""
    meta = {META_SHA256: sha256}
    if mtime is not None:
        meta[META_MTIME] = repr(mtime.timestamp())
    return meta


class S3Storage:
    """A mirror under ``s3://<bucket>/<prefix>/``: the :class:`~.storage.Storage` interface."""

    def __init__(
        self, bucket: str, prefix: str, client_factory: Callable[[Limits], Any], limits: Limits | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.key_prefix = f"{prefix}/" if prefix else ""
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
        return lease_lost(self, state)

    def _forget(self) -> None:
        """Drop the HEAD :meth:`stat` kept: this thread is changing the bucket."""
        self._last_head.value = None

    def key(self, rel: str) -> str:
        return f"{self.key_prefix}{check_relative(rel)}"

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

    def send(self, rel: str, call: Callable[..., Any], kwargs: dict[str, Any] | None = None, trip: bool = True) -> Any:
        """``call`` for ``rel``'s key; FileNotFoundError for a missing key, StorageServerError
        otherwise (``trip``: see :meth:`_error`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(Bucket=self.bucket, Key=self.key(rel), **(kwargs or {}))
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                raise FileNotFoundError(self.display(rel)) from exc
            raise self._error(rel, exc, trip) from exc
        except BotoCoreError as exc:
            raise self._error(rel, exc, trip) from exc

    def head(self, rel: str) -> dict[str, Any] | None:
        """The HEAD of ``rel``'s object, or None when there is none."""
        try:
            return self.send(rel, self.client.head_object)
        except FileNotFoundError:
            return None

    # -- reading -------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        body = self.send(rel, self.client.get_object)["Body"]
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
        listing = self.send(rel, lambda Bucket, Key: self.client.list_objects_v2(Bucket=Bucket, Prefix=f"{Key}/", MaxKeys=1))
        return bool(listing.get("KeyCount"))

    def files(self, rel: str) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every object below ``rel``."""
        from botocore.exceptions import BotoCoreError, ClientError

        cut = len(self.key_prefix)
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
                    ExtraArgs={"Metadata": _metadata(sink.digest.hexdigest(), mtime)}, Config=transfer,
                )
            except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
                raise self._error(rel, exc) from exc

    def write_bytes(self, rel: str, data: bytes, mtime: datetime | None = None) -> None:
        self._forget()
        meta = _metadata(hashlib.sha256(data).hexdigest(), mtime)
        self.send(rel, self.client.put_object, dict(Body=data, Metadata=meta))

    def write_if_changed(self, rel: str, data: bytes) -> bool:
        """Write ``data`` unless the object's stored sha256 says it holds exactly it (one HEAD)."""
        digest = hashlib.sha256(data).hexdigest()
        if self.sha256(rel) == digest:
            return False
        self._forget()
        self.send(rel, self.client.put_object, dict(Body=data, Metadata=_metadata(digest, None)))
        return True

    def delete(self, rel: str) -> bool:
        self._forget()
        if self.head(rel) is None:
            return False
        self.send(rel, self.client.delete_object)
        return True

    def delete_tree(self, rel: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self._forget()
        keys = [f"{self.key_prefix}{path}" for path, _size in self.files(rel)]
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
        self.send(rel, self.client.copy_object, dict(CopySource=source, Metadata=meta, MetadataDirective="REPLACE"))

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
