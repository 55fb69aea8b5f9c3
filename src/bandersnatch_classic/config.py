"""Read and validate the INI configuration (docs/configuration.md lists every key).

Every ``[mirror]`` key is read here, once, into a typed :class:`MirrorConfig`; the rest of
the program never looks at raw strings. Filter sections are validated by
:mod:`bandersnatch_classic.filters`, which receives the parser itself.
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import difflib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, effective_user

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/bandersnatch.conf")

SIMPLE_FORMATS = ("ALL", "HTML", "JSON")
COMPARE_METHODS = ("hash", "stat")
DIGEST_NAMES = ("sha256", "md5")
API_METHODS = ("auto", "xmlrpc", "simple", "html")
STORAGE_BACKENDS = ("filesystem",)
MAX_WORKERS = 64
#: ``max-document-size``: the largest project document (JSON API, project page) read from
#: the upstream. The public index's largest are a few MB; a larger one fails its project.
DEFAULT_MAX_DOCUMENT_SIZE = 64 << 20
_SIZE = re.compile(r"(\d+)\s*(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE)
#: ``max-removals``: a number of projects, or a percentage of the mirror's projects.
_REMOVALS = re.compile(r"(\d+)|(\d+(?:\.\d+)?)%")

#: Sections whose keys the filters read; unknown keys there are the filters' business.
FILTER_SECTIONS = frozenset(
    {
        "plugins",
        "allowlist",
        "blocklist",
        "filter_regex",
        "filter_prerelease",
        "latest_release",
        "size_project_metadata",
        "versions_count_project_metadata",
        "regex_project_metadata",
        "regex_release_file_metadata",
        "version_range_release_file_metadata",
    }
)
#: Sections read outside this module ([s3]: :mod:`bandersnatch_classic.s3`).
IGNORED_SECTIONS = frozenset({"s3"})


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class MirrorConfig:
    """The ``[mirror]`` section, typed. Field names follow the INI keys."""

    directory: Path
    master: str
    storage_backend: str = "filesystem"
    timeout: float = 10.0
    global_timeout: float = 1800.0
    workers: int = 3
    hash_index: bool = False
    stop_on_error: bool = False
    json: bool = False
    release_files: bool = True
    core_metadata: bool = True
    simple_format: str = "ALL"
    compare_method: str = "hash"
    digest_name: str = "sha256"
    keep_index_versions: int = 0
    #: ``verify`` threads when ``--workers`` is not given (0: two per core).
    verifiers: int = 0
    root_uri: str = ""
    diff_file: str = ""
    diff_append_epoch: bool = False
    cleanup: bool = False
    cleanup_todo: bool = False
    delete_missing_packages: bool = False
    allow_non_https: bool = False
    proxy: str = ""
    download_mirror: str = ""
    download_mirror_no_fallback: bool = False
    log_config: str = ""
    storage_filesystem_manage_permissions: bool = True
    api_method: str = "auto"
    max_removals: str = "1%"
    max_document_size: int = DEFAULT_MAX_DOCUMENT_SIZE
    progress_interval: float = 60.0
    #: Prometheus textfile written after every mirror/sync run ("" = none).
    metrics_file: str = ""
    #: ``status`` is unhealthy when the upstream is more than this many serials ahead (0 = off).
    max_lag: int = 0
    #: ``status`` is unhealthy when the last successful ``mirror`` run is older (seconds, 0 = off).
    max_success_age: float = 0.0

    def removal_limit(self, projects: int) -> int:
        """How many of a mirror's ``projects`` one upstream listing may remove in one run.

        A percentage always allows at least one, so that a small mirror can follow a
        deletion; an empty listing is refused whatever the limit (see sync.Mirror.run).
        """
        match = _REMOVALS.fullmatch(self.max_removals)
        assert match is not None  # validated when read
        if match.group(1) is not None:
            return int(match.group(1))
        return max(1, int(projects * float(match.group(2)) / 100))

    @property
    def write_html(self) -> bool:
        return self.simple_format in ("ALL", "HTML")

    @property
    def write_json(self) -> bool:
        return self.simple_format in ("ALL", "JSON")

    @property
    def links_upstream(self) -> bool:
        """Whether pages link the upstream's file URLs: the mirror holds no release files
        (``release-files = false``) and ``root_uri`` names no other place for them."""
        return not self.release_files and not self.root_uri


@dataclasses.dataclass(frozen=True)
class Config:
    """A loaded configuration file: typed ``[mirror]`` plus the parser for the filters."""

    path: Path
    mirror: MirrorConfig
    parser: configparser.ConfigParser


def default_master() -> str:
    """The index pip installs from when nothing is configured, asked of pip at run time."""
    try:
        from pip._internal.models.index import PyPI  # type: ignore[import-not-found]
    except Exception as exc:  # pip missing, or its internals moved
        raise ConfigError(
            "[mirror] master is not set and pip's default index could not be found "
            f"({exc}); set master = https://... in the config"
        ) from exc
    return str(PyPI.url).rstrip("/")


def default_config_text() -> str:
    """The commented default configuration (the text of examples/bandersnatch.conf)."""
    from importlib import resources  # here: only a first run needs it

    return resources.files(__package__).joinpath("default.conf").read_text(encoding="utf-8")


def write_default_config(path: Path) -> None:
    """Create ``path`` holding the default configuration; never overwrite an existing file."""
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(default_config_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot write a default config to {path}: {exc.strerror or exc}; "
            "choose another file with -c/--config"
        ) from exc


class PercentInterpolation(configparser.Interpolation):
    """``%(key)s`` names another key of the same section (or of ``[DEFAULT]``), and ``%%`` is
    a ``%``, as in the reference tool's parser (configparser's basic interpolation).

    Unlike that parser, a ``%`` followed by anything else is kept as it is (``max-removals =
    1%``), so that a value written for this tool before it read references still means the same.
    """

    _REFERENCE = re.compile(r"%(?:%|\(([^)]*)\)s)")
    _DEPTH = 10

    def before_get(self, parser: Any, section: str, option: str, value: str, defaults: Any) -> str:
        return self._expand(parser, section, option, value, defaults, 1)

    def _expand(self, parser: Any, section: str, option: str, value: str, defaults: Any, depth: int) -> str:
        if "%" not in value:
            return value
        if depth > self._DEPTH:
            raise ConfigError(f"[{section}] {option}: %(...)s references nest more than {self._DEPTH} deep (a loop?)")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "%"
            key = parser.optionxform(name.strip())
            if key not in defaults:
                raise ConfigError(
                    f"[{section}] {option} refers to %({name})s, which is not a key of [{section}]; "
                    "set it, or write %% for a literal %"
                )
            return self._expand(parser, section, key, defaults[key], defaults, depth + 1)

        return self._REFERENCE.sub(replace, value)


def new_parser() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=PercentInterpolation(), inline_comment_prefixes=None, delimiters=("=",)
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    return parser


def load(path: Path) -> Config:
    """Parse and validate ``path``. Raises :class:`ConfigError` with one clear line."""
    parser = new_parser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path} as user {effective_user()}: {exc.strerror or exc}") from exc
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(_ini_error(path, exc)) from exc
    if not parser.has_section("mirror"):
        raise ConfigError(f"config {path} has no [mirror] section")
    referenced = {m.group(1) for m in _SECTION_REFERENCE.finditer(parser.get("mirror", "diff-file", raw=True, fallback=""))}
    for section in parser.sections():
        if section != "mirror" and section not in FILTER_SECTIONS | IGNORED_SECTIONS | referenced:
            logger.warning("Unknown section [%s] in %s is ignored", section, path)
    return Config(path=path, mirror=_read_mirror(parser["mirror"], path), parser=parser)


def _ini_error(path: Path, exc: Exception) -> str:
    """One line for an INI syntax error: the file, the line, what is wrong and the fix."""
    where = f"config {path} is not valid INI"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"{where}, line {exc.lineno}: {exc.line.strip()!r} comes before any [section]; start the file with [mirror]"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno, line = exc.errors[0]
        if sys.version_info < (3, 13):  # before 3.13 the line comes as its repr
            line = ast.literal_eval(line)
        return f"{where}, line {lineno}: {line.strip()!r} is not 'key = value' (a key and its value are separated by '=')"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"{where}, line {exc.lineno}: [{exc.section}] {exc.option} is set a second time; keep one"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"{where}, line {exc.lineno}: [{exc.section}] appears a second time; merge the two"
    if isinstance(exc, UnicodeDecodeError):
        return f"{where}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
    first_line = str(exc).strip().splitlines()[0]
    return f"{where}: {first_line}"


def did_you_mean(key: str, known: set[str] | frozenset[str]) -> str:
    """``; did you mean 'workers'?`` for a misspelt key, or nothing when no known key is close."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_bool(value: str | None, where: str, default: bool) -> bool:
    """A boolean config value (true/false, yes/no, on/off, 1/0); ``default`` when unset or empty.

    ``where`` names the key in the error, e.g. ``[mirror] json``.
    """
    value = (value or "").strip()
    if not value:
        return default
    lowered = value.lower()
    if lowered in configparser.ConfigParser.BOOLEAN_STATES:
        return configparser.ConfigParser.BOOLEAN_STATES[lowered]
    raise ConfigError(f"{where} = {value!r} is not a boolean; use true or false")


class _Reader:
    """Typed access to one section that remembers which keys were read."""

    def __init__(self, section: configparser.SectionProxy) -> None:
        self.section = section
        self.seen: set[str] = set()

    def raw(self, key: str) -> str | None:
        self.seen.add(key)
        value = self.section.get(key)
        return None if value is None else value.strip()

    def spelling(self, key: str, *others: str) -> str:
        """The one of ``key`` and its ``others`` spellings the section sets (``key`` when it sets
        none or several): the reference tool's own files spell some keys two ways."""
        self.seen.update((key, *others))
        for name in (key, *others):
            if name in self.section:
                return name
        return key

    def string(self, key: str, default: str = "") -> str:
        value = self.raw(key)
        return default if value is None else value

    def boolean(self, key: str, default: bool) -> bool:
        return parse_bool(self.raw(key), f"[mirror] {key}", default)

    def number(self, key: str, default: float, kind: type, low: float, high: float | None) -> float:
        value = self.raw(key)
        if value is None or value == "":
            return default
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            allowed = f"from {low} to {high}" if high is not None else f"{low} or more"
            noun = "a whole number" if kind is int else "a number"
            raise ConfigError(f"[mirror] {key} = {value!r} is not allowed; use {noun} {allowed}")
        return number

    def choice(self, key: str, default: str, allowed: tuple[str, ...], fold=str.lower) -> str:
        value = self.raw(key)
        if value is None or value == "":
            return default
        for option in allowed:
            if fold(value) == fold(option):
                return option
        raise ConfigError(f"[mirror] {key} = {value!r} is not allowed; use one of {', '.join(allowed)}")


def _directory(r: _Reader, path: Path) -> Path:
    """``[mirror] directory``: required, absolute (``~`` and ``$VARS`` expanded)."""
    raw_directory = r.raw("directory")
    if not raw_directory:
        close = difflib.get_close_matches("directory", [k for k in r.section if k != "directory"], n=1, cutoff=0.75)
        hint = f" ({close[0]!r} is set: a misspelling?)" if close else ""
        raise ConfigError(f"[mirror] directory is required in {path}; set it to an absolute path{hint}")
    directory = Path(os.path.expandvars(os.path.expanduser(raw_directory)))
    if not directory.is_absolute():
        raise ConfigError(f"[mirror] directory = {raw_directory!r} is not allowed; use an absolute path")
    return directory


def _upstream_urls(r: _Reader, allow_non_https: bool) -> tuple[str, str, str]:
    """``master`` (the index root, or a copied mirror tree), ``download-mirror`` and ``root_uri``, checked."""
    master = r.string("master") or default_master()
    from .tree import tree_url  # a copied mirror tree: file:///path or /path

    tree = tree_url(master)
    if tree is None:
        _check_url("master", master, allow_non_https)
    master = tree or _upstream_root(master)
    download_mirror = r.string("download-mirror")
    if download_mirror:
        _check_url("download-mirror", download_mirror, allow_non_https)
    root_uri = r.string("root_uri")
    if root_uri:
        _check_url("root_uri", root_uri, allow_non_https=True)
    return master, download_mirror, root_uri


def _read_mirror(section: configparser.SectionProxy, path: Path) -> MirrorConfig:
    r = _Reader(section)
    directory = _directory(r, path)
    allow_non_https = r.boolean("allow-non-https", False)
    master, download_mirror, root_uri = _upstream_urls(r, allow_non_https)
    storage_backend = r.choice("storage-backend", "filesystem", ("filesystem", "s3"))
    if storage_backend == "s3" and not _importable("boto3"):
        raise ConfigError("[mirror] storage-backend = s3 needs boto3, which is not installed: "
                          "pip install 'bandersnatch-classic[s3]'")

    config = MirrorConfig(
        directory=directory,
        master=master.rstrip("/"),
        storage_backend=storage_backend,
        timeout=r.number("timeout", 10.0, float, 0.1, None),
        global_timeout=r.number("global-timeout", 1800.0, float, 1, None),
        workers=int(r.number("workers", 3, int, 1, MAX_WORKERS)),
        hash_index=r.boolean("hash-index", False),
        stop_on_error=r.boolean("stop-on-error", False),
        json=r.boolean("json", False),
        release_files=r.boolean("release-files", True),
        core_metadata=r.boolean("core-metadata", True),
        simple_format=r.choice("simple-format", "ALL", SIMPLE_FORMATS, str.upper),
        compare_method=r.choice("compare-method", "hash", COMPARE_METHODS),
        digest_name=r.choice("digest_name", "sha256", DIGEST_NAMES),
        keep_index_versions=int(r.number(r.spelling("keep_index_versions", "keep-index-versions"), 0, int, 0, None)),
        verifiers=int(r.number("verifiers", 0, int, 1, MAX_WORKERS)),
        root_uri=root_uri.rstrip("/"),
        diff_file=_diff_file(section.parser, r.string("diff-file")),
        diff_append_epoch=r.boolean("diff-append-epoch", False),
        cleanup=r.boolean("cleanup", False),
        cleanup_todo=r.boolean("cleanup_todo", False),
        delete_missing_packages=r.boolean("delete_missing_packages", False),
        allow_non_https=allow_non_https,
        proxy=_proxy(r.string("proxy")),
        download_mirror=download_mirror.rstrip("/"),
        download_mirror_no_fallback=r.boolean("download-mirror-no-fallback", False),
        log_config=r.string("log-config"),
        storage_filesystem_manage_permissions=r.boolean("storage-filesystem-manage-permissions", True),
        api_method=r.choice("api-method", "auto", API_METHODS),
        max_removals=_max_removals(r.string("max-removals", "1%")),
        max_document_size=_size("max-document-size", r.string("max-document-size"), DEFAULT_MAX_DOCUMENT_SIZE),
        progress_interval=r.number("progress-interval", 60.0, float, 0, None),
        metrics_file=r.string("metrics-file"),
        max_lag=int(r.number("max-lag", 0, int, 0, None)),
        max_success_age=_duration("max-success-age", r.string("max-success-age")),
    )
    for key in section:
        if key not in r.seen:
            logger.warning("Unknown key %r in [mirror] of %s is ignored%s", key, path, did_you_mean(key, r.seen))
    return config


#: ``diff-file = {{mirror_directory}}/new-files``: the reference tool's ``{{<section>_<key>}}``
#: (the section name has no ``_``; spaces inside the braces are allowed).
_SECTION_REFERENCE = re.compile(r"\{\{\s*([^_\s](?:[^_]*[^_\s])?)\s*_\s*(\S(?:.*?\S)?)\s*\}\}")
#: The file name used when ``diff-file`` names a directory (as the reference tool does).
DIFF_FILE_NAME = "mirrored-files"


def _diff_file(parser: configparser.ConfigParser, value: str) -> str:
    """``diff-file`` with ``{{section_key}}`` replaced; a directory gets ``mirrored-files`` in it."""
    if "{{" in value:
        match = _SECTION_REFERENCE.search(value)
        if match is None:
            raise ConfigError(
                f"[mirror] diff-file = {value!r}: '{{{{...}}}}' is not a reference; write {{{{<section>_<key>}}}}, "
                "e.g. {{mirror_directory}}/mirrored-files"
            )
        section, key = match.group(1), match.group(2)
        if not parser.has_option(section, key):
            raise ConfigError(
                f"[mirror] diff-file = {value!r} refers to [{section}] {key}, which is not set; "
                "write {{mirror_directory}}/mirrored-files or an absolute path"
            )
        value = value[: match.start()] + parser.get(section, key).strip() + value[match.end() :]
    if value and Path(value).is_dir():
        value = str(Path(value) / DIFF_FILE_NAME)
    return value


#: Proxy schemes requests reaches through PySocks (the ``socks`` extra).
SOCKS_SCHEMES = ("socks4", "socks4a", "socks5", "socks5h")


def _proxy(value: str) -> str:
    """``proxy``; a SOCKS proxy needs PySocks, named here rather than at the first request."""
    if urlsplit(value).scheme.lower() in SOCKS_SCHEMES and not _importable("socks"):
        raise ConfigError(
            f"[mirror] proxy = {value!r} is a SOCKS proxy, which needs PySocks: "
            "pip install 'bandersnatch-classic[socks]'"
        )
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(key: str, value: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h`` or ``2d`` in seconds ("" = 0, off)."""
    if not value:
        return 0.0
    match = _DURATION.fullmatch(value.replace(" ", "").lower())
    if match is None:
        raise ConfigError(
            f"[mirror] {key} = {value!r} is not allowed; use seconds or a number with s, m, h or d (e.g. 6h)"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _size(key: str, value: str, default: int) -> int:
    """``67108864``, ``65536K``, ``64M``, ``64 MiB`` or ``1G`` in bytes (powers of 1024; "" = ``default``)."""
    if not value:
        return default
    match = _SIZE.fullmatch(value.strip())
    size = int(match.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[(match.group(2) or "").lower()] if match else 0
    if size < 1 << 10:
        raise ConfigError(
            f"[mirror] {key} = {value!r} is not allowed; use a size of at least 1 KiB in bytes or with K, M or G "
            "(e.g. 64 MiB)"
        )
    return size


def human_size(size: int) -> str:
    """A size in binary units: ``64 MiB``, ``200.5 MiB``, ``512 bytes``."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _max_removals(value: str) -> str:
    value = value.replace(" ", "")
    if not _REMOVALS.fullmatch(value) or (value.endswith("%") and float(value[:-1]) > 100):
        raise ConfigError(
            f"[mirror] max-removals = {value!r} is not allowed; use a number of projects (e.g. 100) "
            "or a percentage of the mirror's projects from 0% to 100% (e.g. 1%)"
        )
    return value


def _upstream_root(master: str) -> str:
    """``master`` without a ``/simple`` or ``/pypi`` suffix, which this tool adds itself (with a warning)."""
    parts = urlsplit(master.rstrip("/"))
    path = parts.path
    if path.endswith("/simple"):
        path = path[: -len("/simple")]
    if path == "/pypi":
        path = ""
    if path == parts.path:
        return master
    root = parts._replace(path=path).geturl()
    logger.warning(
        "[mirror] master = %r names an API, not the upstream's root; using %r "
        "(this tool adds /simple/ and /pypi itself): set master = %s",
        master, root, root,
    )
    return root


def _check_url(key: str, value: str, allow_non_https: bool) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"[mirror] {key} = {value!r} is not allowed; use an http(s) URL")
    if parts.scheme == "http" and not allow_non_https:
        raise ConfigError(
            f"[mirror] {key} = {value!r} is plain http; use https, or set allow-non-https = true"
        )
