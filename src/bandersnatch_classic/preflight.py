"""Pre-flight: check the machine around the mirror before the lock is taken or a byte is written.

A run started by cron as the wrong user, against a directory that is a file, or with a
log-config that does not exist would otherwise fail halfway with a traceback. Each check
here raises :class:`~bandersnatch_classic.errors.ConfigError` with one line naming the
path, the user the run acts as, and the fix; the CLI turns that into exit status 2.

Only the top of the tree is checked (the mirror directory, its state files, ``web/`` and
the directories right below it): a permission problem deeper down is met during the run
and stops it as a local I/O error.
"""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

from .config import MirrorConfig
from .errors import ConfigError, effective_user
from .layout import WEB_DIRS

#: The mirror's own files, each read and replaced by a run (``.lock`` is written in place).
STATE_FILES = (
    ".lock", "generation", "status", "todo", "projects.json", "projects.journal", "upstream-method", "run-history.json",
    "missing-metadata", "verify-progress",
)


def check(config: MirrorConfig, writes: bool = True) -> None:
    """Everything a command needs of the machine; ``writes``: it changes the mirror."""
    if config.log_config:
        check_log_config(Path(config.log_config))
    if not writes:
        return
    if config.storage_backend == "filesystem":  # a bucket is checked by its storage (one HEAD)
        check_mirror_directory(config.directory)
    if config.diff_file:
        check_diff_file(Path(config.diff_file), config.diff_append_epoch)
    if config.metrics_file:
        check_metrics_file(Path(config.metrics_file))


def check_mirror_directory(directory: Path) -> None:
    """The mirror directory exists (or can be created), is a directory, and is writable."""
    user = effective_user()
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir():
            raise ConfigError(
                f"[mirror] directory {directory} is not a directory (checked as user {user}); "
                "point directory at a folder, or move what is there away"
            )
        _check_writable_dir(directory, "the mirror directory", user)
        for name in STATE_FILES:
            _check_state_file(directory / name, user)
        for name in WEB_DIRS:  # checked when they exist
            path = directory / name
            if path.exists() or path.is_symlink():
                if not path.is_dir():
                    raise ConfigError(f"{path} is not a directory (checked as user {user}); move it away")
                _check_writable_dir(path, "a directory of the mirror", user)
        return
    parent = directory.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot create the mirror directory {directory}: {parent} is not a directory")
    if _read_only(parent):
        raise ConfigError(
            f"cannot create the mirror directory {directory}: {parent} is on a read-only file system; "
            "choose another [mirror] directory"
        )
    if not _writable(parent):
        raise ConfigError(
            f"cannot create the mirror directory {directory}: {parent} ({_owner(parent)}) is not writable "
            f"for user {user}; create it for that user (mkdir -p {directory} && chown {user} {directory}) "
            "or run as a user who may"
        )


def check_diff_file(path: Path, append_epoch: bool) -> None:
    """The diff file's folder exists and is writable; so is the file itself when it exists."""
    user = effective_user()
    _check_folder("diff-file", path, user)
    if not append_epoch and path.exists():
        if not path.is_file():
            raise ConfigError(f"[mirror] diff-file {path} is not a file; change diff-file")
        if not _access(path, os.W_OK):
            raise ConfigError(
                f"[mirror] diff-file {path} ({_owner(path)}) is not writable for user {user}; "
                "make it writable for that user or change diff-file"
            )


def check_metrics_file(path: Path) -> None:
    """The metrics file's folder exists and is writable (the file is replaced by a rename)."""
    _check_folder("metrics-file", path, effective_user())
    if path.is_dir():
        raise ConfigError(f"[mirror] metrics-file {path} is a directory; name a file (e.g. {path / 'bandersnatch.prom'})")


def _check_folder(key: str, path: Path, user: str) -> None:
    """The folder of the file ``[mirror] key`` names exists and is writable."""
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(
            f"[mirror] {key} {path}: its folder {folder} does not exist; create it "
            f"(mkdir -p {folder}) or change {key}"
        )
    if not _writable(folder):
        raise ConfigError(
            f"[mirror] {key} {path}: its folder {folder} ({_owner(folder)}) is not writable for user {user}; "
            f"make it writable for that user or change {key}"
        )


def check_log_config(path: Path) -> None:
    """The log-config file exists, is readable, and is a logging.config INI file."""
    user = effective_user()
    if not path.is_file():
        raise ConfigError(f"[mirror] log-config {path} does not exist (checked as user {user}); create it or remove the key")
    if not _access(path, os.R_OK):
        raise ConfigError(f"[mirror] log-config {path} ({_owner(path)}) is not readable for user {user}")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"[mirror] log-config {path} is not valid INI: {first}") from exc
    missing = [s for s in ("loggers", "handlers", "formatters") if not parser.has_section(s)]
    if missing:
        raise ConfigError(
            f"[mirror] log-config {path} is not a logging configuration: no [{missing[0]}] section "
            "(see the logging.config file format)"
        )


def _check_writable_dir(path: Path, what: str, user: str) -> None:
    if _read_only(path):
        raise ConfigError(f"{what} {path} is on a read-only file system; remount it read-write or choose another directory")
    if not _writable(path):
        raise ConfigError(
            f"cannot write to {what} {path} ({_owner(path)}) as user {user}; make it writable for that user "
            f"(chown -R {user} {path}) or run as its owner"
        )


def _check_state_file(path: Path, user: str) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise ConfigError(f"the mirror's state file {path} is not a regular file; move it away")
    mode = os.R_OK | os.W_OK if path.name == ".lock" else os.R_OK
    if not _access(path, mode):
        raise ConfigError(
            f"cannot {'write' if mode & os.W_OK else 'read'} the mirror's state file {path} ({_owner(path)}) "
            f"as user {user}; chown {user} {path}, or run as the user that owns the mirror"
        )


def _access(path: Path, mode: int) -> bool:
    """Whether this process may ``mode`` the path, judged by its effective user and groups."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _writable(directory: Path) -> bool:
    return _access(directory, os.W_OK | os.X_OK)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _owner(path: Path) -> str:
    """``owned by root, mode 0755``: what an operator needs to see to fix a permission."""
    try:
        info = path.stat()
    except OSError:
        return "unreadable"
    try:
        import pwd

        owner = pwd.getpwuid(info.st_uid).pw_name
    except (ImportError, KeyError):
        owner = f"uid {info.st_uid}"
    return f"owned by {owner}, mode {stat.S_IMODE(info.st_mode):04o}"
