"""Fixtures: a real upstream on 127.0.0.1 and a mirror directory with a config around it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bandersnatch_classic import cli, config as configuration
from bandersnatch_classic.run import Report
from bandersnatch_classic.sync import Mirror, mirror_lock
from bandersnatch_classic.transport import RetryPolicy

from .upstream import Corpus, UpstreamServer, standard_corpus

#: The loggers whose levels ``cli.main`` sets.
NOISY_LOGGERS = ("urllib3", "requests", "filelock")

#: Retries in tests: as many as in production, with a backoff short enough for a test.
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.01)


@pytest.fixture
def upstream() -> Any:
    with UpstreamServer(standard_corpus()) as server:
        yield server


class MirrorHarness:
    """A mirror directory and its config, run in-process or through the real CLI."""

    def __init__(self, root: Path, upstream: UpstreamServer) -> None:
        self.root = root
        self.dir = root / "mirror"
        self.conf = root / "bandersnatch.conf"
        self.upstream = upstream
        self.keys: dict[str, str] = {
            "directory": str(self.dir),
            "master": upstream.url,
            "allow-non-https": "true",
            "workers": "3",
            "json": "true",
        }
        self.sections = ""
        self.configure()

    @property
    def corpus(self) -> Corpus:
        return self.upstream.corpus

    def configure(self, keys: dict[str, str] | None = None, sections: str | None = None) -> Path:
        """Update [mirror] keys (a value of None removes the key) and the other sections."""
        for key, value in (keys or {}).items():
            if value is None:
                self.keys.pop(key, None)
            else:
                self.keys[key] = value
        if sections is not None:
            self.sections = sections
        body = "[mirror]\n" + "".join(f"{k} = {v}\n" for k, v in self.keys.items())
        self.conf.write_text(body + "\n" + self.sections)
        return self.conf

    def mirror(self) -> Mirror:
        """The mirror the config describes, built as the CLI builds it, with fast retries."""
        return Mirror.from_config(configuration.load(self.conf), retry=FAST_RETRY)

    def run(self, force_check: bool = False, cleanup_todo: bool = False) -> Report:
        """``bandersnatch mirror`` in this process, with fast retries."""
        with self.mirror() as mirror, mirror_lock(mirror.config.directory):
            return mirror.run(force_check, cleanup_todo)

    def sync_projects(self, *names: str, write_root: bool = True) -> Report:
        """``bandersnatch sync NAME...`` in this process."""
        with self.mirror() as mirror, mirror_lock(mirror.config.directory):
            return mirror.sync_projects(names, write_root)

    def cli(self, *args: str, timeout: float = 120, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """The real command in a subprocess: ``python -m bandersnatch_classic -c CONF ARGS``."""
        cmd = [sys.executable, "-m", "bandersnatch_classic", "-c", str(config or self.conf), *args]
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    def main(self, *args: str, config: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """The real command in this process: ``cli.main(["-c", CONF, *ARGS])``, its log captured
        as the subprocess's stderr would be. For everything that is not about processes,
        signals, terminals or users: it saves an interpreter start per call."""
        argv = ["-c", str(config or self.conf), *args]
        root = logging.getLogger()
        saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
        stream = io.StringIO()
        try:
            with contextlib.redirect_stderr(stream):
                try:
                    code = cli.main(argv)
                except SystemExit as exc:  # argparse's usage errors
                    code = int(exc.code or 0)
        finally:
            root.handlers[:], root.level = saved[0], saved[1]
            for name, level in saved[2].items():
                logging.getLogger(name).setLevel(level)
        return subprocess.CompletedProcess(argv, code, "", stream.getvalue())

    # -- looking at the result -----------------------------------------------------------
    def web(self, rel: str) -> Path:
        return self.dir / "web" / rel

    def package_files(self) -> dict[str, str]:
        """Every regular file under web/packages: relative path -> sha256."""
        base = self.dir / "web"
        return {
            str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (base / "packages").rglob("*")
            if p.is_file()
        } if (base / "packages").exists() else {}

    def expected_files(self) -> dict[str, str]:
        """What web/packages must hold for the whole corpus (files and .metadata)."""
        out = {}
        for path, f in self.corpus.files().items():
            out[path.lstrip("/")] = f.sha256
            if f.metadata:
                out[path.lstrip("/") + ".metadata"] = hashlib.sha256(f.metadata).hexdigest()
        return out

    def json_page(self, canonical: str) -> Any:
        return json.loads(self.web(f"simple/{canonical}/index.v1_json").read_text())

    def stray_temporaries(self) -> list[Path]:
        return [p for p in self.dir.rglob(".*.tmp")]


@pytest.fixture
def harness(tmp_path: Path, upstream: UpstreamServer) -> MirrorHarness:
    return MirrorHarness(tmp_path, upstream)


@pytest.fixture
def keep_logging() -> Any:
    """For tests that call ``cli.main`` without a harness: put back the logging it sets up."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
