"""The ``bandersnatch`` command line.

Exit status, one meaning per code (defined in errors.py; docs/operations.md, "Exit status"): 0 everything
mirrored; 1 some projects failed; 2 configuration, environment or usage error (nothing
touched); 3 another run holds the lock; 4 upstream unusable; 5 local I/O error, storage server
error or lost storage lock during the run; 6 a first run wrote the default config; 130 interrupted; 70 an internal error (a bug).
A reader of the output that goes away (``status --json | head``) changes none of them.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from packaging.utils import canonicalize_name

from . import __version__, config as configuration, layout, preflight
from .__main__ import interrupt as _interrupt
from .errors import (
    EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NEW_CONFIG, EXIT_OK, ConfigError, LocalIOError, LockHeld,
    StateError, UpstreamError, WorkerBug, exit_status_of,
)
from .progress import StatusLineHandler
from .run import Report
from .storage import storage_from_config
from .sync import Mirror

logger = logging.getLogger("bandersnatch_classic")

#: Commands that may write a first-run config (at the default path only): the others only read a mirror.
WRITES_FIRST_CONFIG = ("mirror", "sync")
#: What each command does: its line in ``bandersnatch --help`` and the first line of its own --help.
COMMANDS = {
    "mirror": "sync the mirror with the upstream",
    "sync": "sync the named projects now (status and todo stay)",
    "verify": "check every file; repair, and reclaim what nothing references",
    "delete": "remove projects from the mirror",
    "status": "report the mirror's health: serial, lag, last run, failures",
    "serve": "serve the mirror over HTTP (PEP 691 negotiation)",
}
LOG_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint when a global option follows the command (``mirror -c FILE``)."""

    #: The command line being parsed, for the hint.
    argv: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        super().error(message + _order_hint(self.argv))


def _order_hint(argv: Sequence[str]) -> str:
    """``; global options such as -c go before the command: bandersnatch -c FILE mirror`` when
    ``argv`` has a global option after its command; else nothing."""
    args = list(argv)
    command = next((i for i, a in enumerate(args) if a in COMMANDS), None)
    if command is None:
        return ""
    moved: list[str] = []
    rest = args[command:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("-c", "--config") and i + 1 < len(rest):
            moved += rest[i:i + 2]
            del rest[i:i + 2]
        elif arg.startswith("--config=") or (arg.startswith("-c") and len(arg) > 2) or arg == "--debug":
            moved.append(rest.pop(i))
        else:
            i += 1
    if not moved:
        return ""
    fixed = shlex.join(["bandersnatch", *args[:command], *moved, *rest])
    return f"; global options such as -c go before the command: {fixed}"


def build_parser() -> _Parser:
    parser = _Parser(prog="bandersnatch", description="Mirror a Python package index to local disk.")
    parser.add_argument("--version", action="version", version=f"bandersnatch-classic {__version__}")
    parser.add_argument(
        "-c", "--config", type=Path, default=None,
        help=f"configuration file (default: {configuration.DEFAULT_CONFIG_PATH}; only there does a first "
             "`mirror` write a commented default config)",
    )
    parser.add_argument("--debug", action="store_true", help="log every request and file")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mirror = _command(commands, "mirror")
    mirror.add_argument("--force-check", action="store_true", help="compare every project, not only the changed ones")
    mirror.add_argument("--cleanup-todo", action="store_true", help="discard an unfinished run's todo file first")
    mirror.add_argument(
        "--allow-mass-removal", action="store_true",
        help="accept, for this run, a listing that removes more projects than [mirror] max-removals",
    )

    sync_cmd = _command(commands, "sync")
    sync_cmd.add_argument("--skip-simple-root", action="store_true", help="do not rewrite the root index")
    sync_cmd.add_argument("names", nargs="+", metavar="NAME")

    verify = _command(commands, "verify")
    verify.add_argument("--delete", action="store_true", help="delete files no mirrored project references")
    verify.add_argument("--dry-run", action="store_true", help="change nothing; report what would be fetched and deleted")
    verify.add_argument("--json-update", action="store_true", help="refresh every project's metadata from the upstream first")
    verify.add_argument(
        "--workers", type=_whole(1, None), default=0,
        help="hashing threads, 1 or more (default: [mirror] verifiers, else two per core)",
    )
    verify.add_argument("--read", action="store_true",
                        help="hash every file's bytes, also on object storage (default there: size and stored sha256)")

    delete = _command(commands, "delete")
    delete.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    # bandersnatch 8.x's delete fetches each project's JSON document first (--workers at a
    # time, none with --skip-json-fetch); this one reads what the mirror holds and fetches
    # nothing, so both are accepted for its scripts and change nothing.
    delete.add_argument("--workers", type=_whole(0, None), default=0, help="accepted for bandersnatch 8.x; delete fetches nothing")
    delete.add_argument("--skip-json-fetch", action="store_true", help="accepted for bandersnatch 8.x; delete fetches nothing")
    delete.add_argument("names", nargs="+", metavar="NAME")

    status = _command(commands, "status")
    status.add_argument("--json", action="store_true", help="print a JSON document (keys: docs/operations.md)")

    serve = _command(commands, "serve")
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_whole(1, 65535), default=8080, help="port to listen on, 1-65535 (default 8080)")

    return parser


def _command(commands: Any, name: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with what it does."""
    what = COMMANDS[name]
    return commands.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")


def _whole(low: int, high: int | None) -> Any:
    """An argparse type: a whole number from ``low`` to ``high`` (or more), else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a whole number {allowed}")
        return value

    return parse


def setup_logging(debug: bool, log_config: str = "") -> None:
    if log_config:
        from logging.config import fileConfig  # here: only runs with a log-config need it

        try:
            fileConfig(log_config, disable_existing_loggers=False)
        except Exception as exc:  # fileConfig raises whatever the file's contents provoke
            raise ConfigError(f"[mirror] log-config {log_config} cannot be applied: {type(exc).__name__}: {exc}") from exc
        return
    # On a terminal, a live progress line stays at the bottom while the log scrolls above it.
    handler = StatusLineHandler(sys.stderr) if sys.stderr.isatty() else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # urllib3 logs each retry at WARNING; the one line that matters is ours, after the last.
    for noisy in ("urllib3", "requests", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line, in this process. The console script (``__main__``) installs the
    signal handlers earlier, before this module is imported."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        parser = build_parser()
        parser.argv = sys.argv[1:] if argv is None else argv
        args = parser.parse_args(argv)
        setup_logging(args.debug)
        return _run(args)
    except (Exception, KeyboardInterrupt) as exc:
        return exit_status(exc)
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(exc: BaseException) -> int:
    """Log the one line that says why a command stopped; return its exit status
    (:func:`~bandersnatch_classic.errors.exit_status_of`)."""
    status = exit_status_of(exc)
    if isinstance(exc, KeyboardInterrupt):
        logger.error("Interrupted; the next run resumes where this one stopped")
    elif isinstance(exc, ConfigError):
        logger.error("Configuration error: %s", exc)
    elif isinstance(exc, StateError):
        logger.error("Mirror state error: %s", exc)
    elif isinstance(exc, LockHeld):  # another run is doing the work: worth knowing, not an error
        logger.warning("%s", exc)
    elif isinstance(exc, LocalIOError):
        logger.error("%s, run stopped (unfinished projects stay in todo): %s", exc.headline, exc)
    elif isinstance(exc, UpstreamError):
        logger.error("Upstream unusable: %s", exc)
    elif isinstance(exc, WorkerBug):  # the traceback is the worker's, maybe from another process
        logger.error(
            "Internal error (a bug: please report it with this traceback), run stopped (unfinished projects "
            "stay in todo): %s\n%s", exc, exc.details.rstrip(),
        )
    elif status != EXIT_INTERNAL:
        logger.error("%s", exc)
    else:
        logger.error("Internal error (a bug: please report it with this traceback)", exc_info=exc)
    return status


def _run(args: argparse.Namespace) -> int:
    path: Path = args.config or configuration.DEFAULT_CONFIG_PATH
    if not path.exists():
        if args.config is not None:  # a path typed by hand: a typo is likelier than a wish for a new file
            raise ConfigError(
                f"-c {path}: no such file; check the path (a first `bandersnatch mirror` without -c writes a "
                f"commented default config to {configuration.DEFAULT_CONFIG_PATH})"
            )
        if args.command not in WRITES_FIRST_CONFIG:
            raise ConfigError(f"no config at {path}: give one with -c FILE, or run `bandersnatch mirror` to write a default")
        configuration.write_default_config(path)
        logger.error(
            "No config found: wrote a default one to %s. Review it (at least [mirror] directory), "
            "then run again.", path,
        )
        return EXIT_NEW_CONFIG
    loaded = configuration.load(path)
    mirror = loaded.mirror
    preflight.check(mirror, writes=args.command not in ("serve", "status"))
    if mirror.log_config:
        setup_logging(args.debug, mirror.log_config)

    if args.command == "serve":
        from .serve import serve

        return serve(storage_from_config(loaded, reads_below=layout.WEB), args.bind, args.port, mirror.hash_index)
    with Mirror.from_config(loaded) as engine:
        if args.command == "status":
            from .health import status_command

            return status_command(engine.storage, mirror, engine.upstream, engine.filters.allowlist() is not None, args.json)
        if args.command in ("mirror", "sync"):
            logger.debug("Syncing %s from %s", mirror.directory, mirror.master)
            with engine.lock():
                return _sync_command(args, engine)
        elif args.command == "verify":
            from .verify import verify

            with engine.lock():
                result = verify(
                    engine,
                    delete=args.delete, dry_run=args.dry_run, json_update=args.json_update,
                    workers=args.workers or mirror.verifiers,
                    read=args.read,
                )
            for name, reason in sorted(result.unfixed.items()):
                logger.error("Could not fix %s: %s", name, reason)
            logger.info("%s", result.summary())
            return result.exit_code
        else:  # delete
            from .verify import delete_projects

            with engine.lock():
                removed = delete_projects(engine, args.names, args.dry_run)
            for path in removed:
                logger.info("%s %s", "Would remove" if args.dry_run else "Removed", path)
            logger.info("Delete: %d paths %s for %d projects", len(removed),
                        "would be removed" if args.dry_run else "removed", len(args.names))
            return EXIT_OK


def _sync_command(args: argparse.Namespace, engine: Mirror) -> int:
    """Record the run in the history (and the metrics file) around it, whatever its exit status."""
    from .health import RunRecorder

    report = Report()
    recorder = RunRecorder(engine.storage, engine.config, args.command, report)
    recorder.start()
    status = EXIT_INTERNAL
    try:
        status = _sync_run(args, engine, report)
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        raise
    finally:
        recorder.finish(status)
    return status


def _sync_run(args: argparse.Namespace, engine: Mirror, report: Report) -> int:
    """``mirror`` or ``sync``: the run, then its failures and the summary line, whatever happened."""
    try:
        if args.command == "mirror":
            engine.run(
                force_check=args.force_check,
                cleanup_todo=args.cleanup_todo or engine.config.cleanup_todo,
                allow_mass_removal=args.allow_mass_removal,
                report=report,
            )
        else:
            engine.sync_projects(args.names, write_root=not args.skip_simple_root, report=report)
            engine.write_diff_file()
            for name in args.names:
                if name in report.excluded:
                    report.failed[name] = "not synced: the filters of this mirror exclude it"
                elif canonicalize_name(name) in report.gone:
                    report.failed[name] = "the upstream has no such project (HTTP 404): check the name"
        status = report.exit_code
    except (Exception, KeyboardInterrupt) as exc:
        status = exit_status(exc)
    for name, reason in sorted(report.failed.items()):
        logger.error("Failed: %s: %s", name, reason)
    logger.info("%s", report.summary())
    return status
