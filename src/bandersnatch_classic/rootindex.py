"""Publishing the root: the root index, edited in place or rendered from the project records, and the diff file."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

from . import layout, pages
from .config import MirrorConfig
from .errors import LocalIOError
from .state import MirrorState
from .storage import Storage


def write_root(config: MirrorConfig, storage: Storage, state: MirrorState, serial: int) -> list[str]:
    """Bring the root index up to date with the project records: edited in place where it can
    be (:func:`_edit_root`), else rendered from the records (never from a directory scan); save
    the records, and return the paths that changed."""
    written: list[str] = []
    edited = _edit_root(config, storage, state, serial)
    if edited is not None:
        page, old, html = edited
        if page != old:
            storage.write_bytes(layout.ROOT_JSON, page)
            written.append(layout.ROOT_JSON)
        if html is not None:
            written += [path for path in layout.ROOT_HTML if storage.write_if_changed(path, html)]
        state.save_projects()
        return written
    projects = state.projects  # loaded: a deferred run learns here whether a name changed
    write_html = config.write_html and (state.names_changed or not storage.exists(layout.ROOT_HTML[0]))
    records = projects.rows() if write_html or config.write_json else []
    if write_html:
        html = pages.root_html(records).encode()
        written += [path for path in layout.ROOT_HTML if storage.write_if_changed(path, html)]
    if config.write_json:
        page = pages.root_json(records, serial).encode()
        if storage.write_if_changed(layout.ROOT_JSON, page):
            written.append(layout.ROOT_JSON)
    state.save_projects()
    return written


def _edit_root(
    config: MirrorConfig, storage: Storage, state: MirrorState, serial: int
) -> tuple[bytearray, bytes, bytearray | None] | None:
    """The root JSON page edited in place for the projects this run recorded and removed
    (:func:`pages.edit_root_json`), the page as read, and the root HTML page edited too when a
    name changed (else None); None when they must be rendered whole.

    Tried when the JSON page is written and the HTML page there is, and either no name
    changed or the records are deferred (:attr:`MirrorState.deferred`: then the edit is how a
    new, renamed or removed name is found). A small run on a million projects then moves
    bytes instead of rendering every row, and need not load the records.
    """
    if not config.write_json or (config.write_html and not storage.exists(layout.ROOT_HTML[0])):
        return None
    if state.names_changed and not state.deferred:
        return None
    try:
        old = storage.read_bytes(layout.ROOT_JSON)
        edited = pages.edit_root_json(old, state.recorded, state.forgotten, serial, state.record_count())
        if edited is None:
            return None
        page, names_changed = edited
        html = None
        if names_changed and config.write_html:
            html = pages.edit_root_html(storage.read_bytes(layout.ROOT_HTML[0]), state.recorded, state.forgotten)
            if html is None:
                return None
    except FileNotFoundError:
        return None
    return page, old, html


def write_diff_file(config: MirrorConfig, storage: Storage, written: Iterable[str]) -> None:
    """``diff-file``, after a ``mirror`` or ``sync`` run (not the syncs of ``verify
    --json-update``): the paths the run wrote, one per line, replacing the last run's list
    (a run that wrote nothing leaves it empty), as the reference tool does; offline-copy
    scripts feed it to ``rsync --files-from``. ``diff-append-epoch``: a new file per run,
    ``<diff-file>-<unix time>``. Written to a temporary name and renamed into place, so a
    reader never sees half a list."""
    if not config.diff_file:
        return
    path = config.diff_file
    if config.diff_append_epoch:
        path = f"{path}-{int(time.time())}"
    lines = "".join(f"{storage.display(p)}\n" for p in sorted(set(written)))
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as fh:
            fh.write(lines)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise LocalIOError.of(path, exc) from exc
