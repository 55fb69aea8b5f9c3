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

The run lock is :class:`S3Lock`: see its docstring and docs/object-storage.md.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import socket
import stat as stat_module
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from .config import MirrorConfig, parse_bool
from .errors import ConfigError, LocalIOError, LockHeld
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
LOCK_KEY = ".lock"
#: How long a lease lasts; the holder renews it every third of that.
LEASE_SECONDS = 60.0
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


def make_client(parser: configparser.ConfigParser) -> Any:
    """The boto3 S3 client the ``[s3]`` section describes.

    ``config_param_<name>`` that botocore's ``Config`` knows (``connect_timeout``,
    ``max_pool_connections``...) configures the client; any other ``<name>`` is a parameter
    of S3's PutObject (``ServerSideEncryption``, ``SSEKMSKeyId``, ``StorageClass``...), which
    every object written carries, as the reference tool passes them: to PutObject,
    CreateMultipartUpload and CopyObject. ``max_attempts``: botocore's adaptive retry mode
    with that many retries (the reference tool's key).
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
    if section.get("signature_version"):
        options["signature_version"] = section["signature_version"]
    if section.get("max_attempts"):
        options["retries"] = {"max_attempts": _max_attempts(section["max_attempts"]), "mode": "adaptive"}
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


def _max_attempts(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"[s3] max_attempts = {value!r} is not allowed; use a whole number, 0 or more")
    return number


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


class S3Storage:
    """A mirror under ``s3://<bucket>/<prefix>/``: the :class:`~.storage.Storage` interface."""

    def __init__(self, bucket: str, prefix: str, client_factory: Callable[[], Any]) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._base = f"{prefix}/" if prefix else ""
        self._factory = client_factory
        #: One client per process: a forked worker makes its own (never shares a socket).
        self._clients: dict[int, Any] = {}
        self._client_lock = threading.Lock()
        #: The HEAD that this thread's last :meth:`stat` made, for the :meth:`sha256` of the
        #: same path that callers (the engine, verify) ask next: one HEAD for both.
        self._last_head = threading.local()

    @classmethod
    def from_config(cls, config: MirrorConfig, parser: configparser.ConfigParser) -> S3Storage:
        """The storage ``[mirror] directory`` and ``[s3]`` describe, once the bucket answered a HEAD."""
        bucket, prefix = split_directory(str(config.directory))
        storage = cls(bucket, prefix, lambda: make_client(parser))
        storage.check_bucket()
        return storage

    @property
    def client(self) -> Any:
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            with self._client_lock:
                client = self._clients.get(pid) or self._factory()
                self._clients = {pid: client}
        return client

    def _forget(self) -> None:
        """Drop the HEAD :meth:`stat` kept: this thread is changing the bucket."""
        self._last_head.value = None

    def key(self, rel: str) -> str:
        return f"{self._base}{check_relative(rel)}"

    def display(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def _error(self, rel: str, exc: Exception) -> LocalIOError:
        """A failed request as the error a storage failure is: the run stops and keeps its todo."""
        return LocalIOError(f"{self.display(rel)}: {exc}")

    def check_bucket(self) -> None:
        """Pre-flight: one HEAD of the bucket; a clear configuration error when it does not answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise ConfigError(f"the bucket {self.bucket!r} of [mirror] directory is not reachable: {exc}") from exc

    def _request(self, rel: str, call: Callable[..., Any], **kwargs: Any) -> Any:
        """``call`` for ``rel``'s key; FileNotFoundError for a missing key, LocalIOError otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(Bucket=self.bucket, Key=self.key(rel), **kwargs)
        except ClientError as exc:
            if _code(exc) in NOT_FOUND:
                raise FileNotFoundError(self.display(rel)) from exc
            raise self._error(rel, exc) from exc
        except BotoCoreError as exc:
            raise self._error(rel, exc) from exc

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
            raise self._error(rel, FileNotFoundError(f"link target {target} does not exist"))
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
    """Whether a lock's holder ran on this host and its process is gone (a killed run)."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


class S3Lock:
    """The run lock on a bucket, across machines: a lock object created only if absent.

    Acquire: a PUT of ``<prefix>/.lock`` with ``If-None-Match: *``, which S3 lets only one
    writer win. The object holds who holds it and until when (``expires``, a lease of
    :data:`LEASE_SECONDS`); a background thread renews the lease every third of it with a
    PUT conditional on the object's ETag (``If-Match``), so a holder notices when its lock
    was taken over. Takeover: a lease that expired more than :data:`TAKEOVER_PERIODS`
    lease periods ago belongs to a run that died, and so does one whose holder ran on this
    host as a process that no longer exists; it is deleted only if unchanged
    (``If-Match`` on its ETag), then created again conditionally, so of two runs taking it
    over at once only one wins. Release: a DELETE conditional on our ETag.
    """

    def __init__(self, storage: S3Storage, lease: float = LEASE_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.lease = lease
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.etag: str | None = None
        #: Set when a renewal found the lock taken over: the run goes on but is no longer exclusive.
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = self.clock()
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired": now, "expires": now + self.lease,
        }).encode()

    def _put(self, **condition: str) -> bool:
        """A conditional PUT of the lock object; False when the condition failed."""
        from botocore.exceptions import ClientError

        try:
            answer = self.storage._request(LOCK_KEY, self.storage.client.put_object, Body=self._body(), **condition)
        except LocalIOError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in CONFLICT:
                return False
            raise
        self.etag = answer["ETag"]
        return True

    def acquire(self) -> None:
        if self._put(IfNoneMatch="*"):
            return
        held = self._held()
        if held is not None:
            raise LockHeld(f"another run holds {self.storage.display(LOCK_KEY)} ({held}); not starting a second one")
        if not self._put(IfNoneMatch="*"):
            raise LockHeld(f"another run took over {self.storage.display(LOCK_KEY)} first; not starting a second one")

    def _held(self) -> str | None:
        """Who holds the lock, or None after deleting a stale one (or finding it gone)."""
        from botocore.exceptions import ClientError

        try:
            answer = self.storage._request(LOCK_KEY, self.storage.client.get_object)
        except FileNotFoundError:
            return None
        etag = answer["ETag"]
        try:
            info = json.loads(answer["Body"].read())
            holder, expires = str(info["owner"]), float(info["expires"])
        except (ValueError, KeyError, TypeError):
            info, holder, expires = {}, "unreadable lock object", answer["LastModified"].timestamp() + self.lease
        overdue = self.clock() - expires
        if _died_here(info):
            logger.warning("Taking over the lock of %s: its process on this host is gone", holder)
        elif overdue <= TAKEOVER_PERIODS * self.lease:
            return f"held by {holder}, lease until {datetime.fromtimestamp(expires).isoformat(timespec='seconds')}"
        else:
            logger.warning("Taking over the lock of %s: its lease expired %.0fs ago", holder, overdue)
        try:
            self.storage._request(LOCK_KEY, self.storage.client.delete_object, IfMatch=etag)
        except LocalIOError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in CONFLICT:
                return f"renewed or taken over by another run while we looked ({holder})"
            raise
        return None

    def renew(self) -> bool:
        """Extend the lease (If-Match our ETag); False, and :attr:`lost` set, when it was taken over."""
        if self.etag is None or self.lost.is_set():
            return False
        try:
            if self._put(IfMatch=self.etag):
                return True
        except FileNotFoundError:  # deleted under us: as good as taken over
            pass
        logger.error("The lock %s was taken over by another run: this run is no longer exclusive",
                     self.storage.display(LOCK_KEY))
        self.lost.set()
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                if not self.renew():
                    return
            except LocalIOError as exc:  # the next attempt may get through
                logger.warning("Could not renew the lock's lease: %s", exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is not None and not self.lost.is_set():
            with contextlib.suppress(LocalIOError, FileNotFoundError):
                self.storage._request(LOCK_KEY, self.storage.client.delete_object, IfMatch=self.etag)
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
