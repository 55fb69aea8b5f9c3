"""The ``bandersnatch`` command line.

Exit status (DESIGN.md section 6): 0 everything mirrored; 1 some projects failed, or a
first run wrote the default config; 2 usage or configuration error; 3 another run holds
the lock.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, config as configuration
from .errors import BandersnatchError, ConfigError, LockHeld, StateError
from .dependencies import DependencyPolicy
from .filters import FilterSet
from .storage import FilesystemStorage
from .sync import Mirror, mirror_lock, sync
from .upstream import Upstream

logger = logging.getLogger("bandersnatch_classic")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bandersnatch", description="Mirror a Python package index to local disk.")
    parser.add_argument("--version", action="version", version=f"bandersnatch-classic {__version__}")
    parser.add_argument(
        "-c", "--config", type=Path, default=configuration.DEFAULT_CONFIG_PATH,
        help=f"configuration file (default: {configuration.DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument("--debug", action="store_true", help="log every request and file")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mirror = commands.add_parser("mirror", help="sync the mirror with the upstream")
    mirror.add_argument("--force-check", action="store_true", help="compare every project, not only the changed ones")
    mirror.add_argument("--cleanup-todo", action="store_true", help="discard an unfinished run's todo file first")

    sync_cmd = commands.add_parser("sync", help="sync the named projects now (status and todo stay)")
    sync_cmd.add_argument("--skip-simple-root", action="store_true", help="do not rewrite the root index")
    sync_cmd.add_argument("names", nargs="+", metavar="NAME")

    verify = commands.add_parser("verify", help="check every file; repair, and reclaim what nothing references")
    verify.add_argument("--delete", action="store_true", help="delete files no mirrored project references")
    verify.add_argument("--dry-run", action="store_true", help="change nothing; report what would be fetched and deleted")
    verify.add_argument("--json-update", action="store_true", help="refresh every project's metadata from the upstream first")
    verify.add_argument("--workers", type=int, default=0, help="hashing threads (default: two per core)")

    delete = commands.add_parser("delete", help="remove projects from the mirror")
    delete.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    delete.add_argument("names", nargs="+", metavar="NAME")

    serve = commands.add_parser("serve", help="serve the mirror over HTTP (PEP 691 negotiation)")
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")

    return parser


def setup_logging(debug: bool, log_config: str = "") -> None:
    if log_config:
        from logging.config import fileConfig  # here: only runs with a log-config need it

        fileConfig(log_config, disable_existing_loggers=False)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("urllib3", "requests", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def make_upstream(mirror: configuration.MirrorConfig) -> Upstream:
    return Upstream(
        mirror.master,
        timeout=mirror.timeout,
        global_timeout=mirror.global_timeout,
        proxy=mirror.proxy,
        download_mirror=mirror.download_mirror,
        download_mirror_no_fallback=mirror.download_mirror_no_fallback,
        pool_size=mirror.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    try:
        return _run(args)
    except ConfigError as exc:
        logger.error("Configuration error: %s", exc)
        return EXIT_USAGE
    except LockHeld as exc:
        logger.error("%s", exc)
        return EXIT_LOCKED
    except StateError as exc:
        logger.error("Mirror state error: %s", exc)
        return EXIT_USAGE
    except BandersnatchError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        logger.error("Interrupted; the next run resumes where this one stopped")
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    path: Path = args.config
    if not path.exists():
        configuration.write_default_config(path)
        logger.error(
            "No config found: wrote a default one to %s. Review it (at least [mirror] directory), "
            "then run again.", path,
        )
        return EXIT_FAILED
    loaded = configuration.load(path)
    mirror = loaded.mirror
    if mirror.log_config:
        setup_logging(args.debug, mirror.log_config)
    storage = FilesystemStorage(mirror.directory, mirror.storage_filesystem_manage_permissions)

    if args.command == "serve":
        from .serve import serve

        return serve(mirror.directory / "web", args.bind, args.port, mirror.hash_index)
    filters = FilterSet.from_config(loaded.parser)
    dependencies = DependencyPolicy.from_config(loaded.parser)
    if filters.active:
        logger.info("Filters enabled: %s", ", ".join(filters.active))
    if dependencies is not None and filters.allowlist() is None:
        raise ConfigError(
            f"[allowlist] {'resolve-build-dependencies' if dependencies.build else 'resolve-dependencies'} = true "
            "needs an allowlist "
            "(allowlist_project or project_requirements with packages listed)"
        )
    upstream = make_upstream(mirror)
    try:
        if args.command == "mirror":
            logger.info("Syncing %s from %s", mirror.directory, mirror.master)
            report = sync(
                upstream, storage, mirror, filters, dependencies=dependencies,
                force_check=args.force_check, cleanup_todo=args.cleanup_todo or mirror.cleanup_todo,
            )
        elif args.command == "sync":
            with mirror_lock(mirror.directory):
                report = Mirror(mirror, upstream, storage, filters, dependencies).sync_projects(
                    args.names, write_root=not args.skip_simple_root
                )
        elif args.command == "verify":
            from .verify import verify

            with mirror_lock(mirror.directory):
                result = verify(
                    Mirror(mirror, upstream, storage, filters, dependencies),
                    delete=args.delete, dry_run=args.dry_run, json_update=args.json_update, workers=args.workers,
                )
            for name, reason in sorted(result.unfixed.items()):
                logger.error("Could not fix %s: %s", name, reason)
            logger.info("%s", result.summary())
            return result.exit_code
        else:  # delete
            from .verify import delete_projects

            with mirror_lock(mirror.directory):
                removed = delete_projects(Mirror(mirror, upstream, storage, filters), args.names, args.dry_run)
            for path in removed:
                logger.info("%s %s", "Would remove" if args.dry_run else "Removed", path)
            logger.info("Delete: %d paths %s for %d projects", len(removed),
                        "would be removed" if args.dry_run else "removed", len(args.names))
            return EXIT_OK
    finally:
        upstream.close()
    for name, reason in sorted(report.failed.items()):
        logger.error("Failed: %s: %s", name, reason)
    logger.info("%s", report.summary())
    return report.exit_code
