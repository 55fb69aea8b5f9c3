"""Closures pip can resolve and build under any filter (issue 22): requirement edges keep the
releases they need even where ``latest_release``, version or pre-release filters would drop
them, and an edge nothing can satisfy is said once, with its chain, and counted by ``status``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .test_serve import Running, _clean_env
from .upstream import UpstreamServer, add_built_project, closure_corpus

ALLOWLISTED = ["app", "tool"]


@pytest.fixture
def closure(tmp_path: Path) -> Iterator[MirrorHarness]:
    with UpstreamServer(closure_corpus()) as server:
        h = MirrorHarness(tmp_path, server)
        configure(h, ALLOWLISTED)
        yield h


def configure(h: MirrorHarness, packages: list[str], keep: int = 1, blocklist: str = "") -> None:
    lines = "".join(f"    {p}\n" for p in packages)
    blocked = f"    blocklist_project\n[blocklist]\npackages = {blocklist}\n" if blocklist else ""
    h.configure(sections=(
        f"[plugins]\nenabled =\n    allowlist_project\n    latest_release\n    prerelease_release\n{blocked}"
        f"[allowlist]\npackages =\n{lines}resolve-build-dependencies = true\n"
        f"python-versions = {sys.version_info.major}.{sys.version_info.minor}\nplatforms = linux\n"
        f"[latest_release]\nkeep = {keep}\n"
    ))


def kept(h: MirrorHarness) -> dict[str, list[str]]:
    """Project -> the versions its PEP 691 page lists."""
    pages = sorted(p.name for p in h.web("simple").iterdir() if p.is_dir())
    return {name: h.json_page(name)["versions"] for name in pages}


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", *args[:1], "--isolated", "--no-cache-dir", "--disable-pip-version-check",
           "--no-input", *args[1:]]
    return subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=300)


def test_edges_keep_the_releases_pip_needs_to_build_and_install(closure: MirrorHarness, tmp_path: Path) -> None:
    h = closure
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    # keep = 1 and no pre-releases, except where an edge needs more: tinybackend<2 (app's and
    # leaf 1.0's sdists), libdep<2 (app; the newest final release, not 1.6rc1), leaf==1.0 (libdep 1.5)
    assert kept(h) == {
        "app": ["1.0"], "tool": ["3.0"], "tinybackend": ["1.0", "2.0"], "libdep": ["1.5", "2.0"], "leaf": ["1.0", "2.0"],
    }
    assert "allowlisted" not in result.stderr and "satisf" not in result.stderr, result.stderr
    # pip builds every allowlisted sdist with build isolation, the backend from the mirror
    # served by `bandersnatch serve`; then from a file:// path it installs them, wheels only.
    running = Running(h.dir / "web")
    try:
        built = pip("wheel", "--no-binary", ":all:", "--index-url", running.index, "--wheel-dir", str(tmp_path / "w"),
                    *ALLOWLISTED)
    finally:
        running.stop()
    assert built.returncode == 0, built.stdout + built.stderr
    assert {p.name.split("-")[0] for p in (tmp_path / "w").iterdir()} == {"app", "tool", "libdep", "leaf"}
    installed = pip("install", "--only-binary", ":all:", "--index-url", (h.dir / "web" / "simple").as_uri(),
                    "--target", str(tmp_path / "site"), *ALLOWLISTED)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert {"app", "tool", "libdep", "leaf"} <= {p.name for p in (tmp_path / "site").iterdir()}


def test_a_later_release_of_a_dependency_keeps_what_the_edges_need(closure: MirrorHarness) -> None:
    h = closure
    assert h.main("mirror").returncode == 0
    # tinybackend releases 3.0 and leaf 3.0: re-synced alone (their dependents unchanged), they
    # must keep 1.0 for the edges an earlier run found
    add_built_project(h.corpus, "leaf", "3.0", ["tinybackend"])
    h.corpus.add_file("tinybackend", "3.0", "tinybackend-3.0.tar.gz", b"x")
    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    pages = kept(h)
    # tool's tinybackend>=2 is satisfied by 3.0 now: 2.0 goes, as keep = 1 says
    assert pages["leaf"] == ["1.0", "3.0"] and pages["tinybackend"] == ["1.0", "3.0"]


def test_unsatisfiable_edges_are_said_once_with_their_chain_and_counted(closure: MirrorHarness) -> None:
    h = closure
    add_built_project(h.corpus, "needy", "1.0", ["ghost[hatch]>=0.1.2", "tinybackend"], ["libdep>=9", "blocked"])
    add_built_project(h.corpus, "leaf", "1.0.post1", ["tinybackend<2"], ["ghost2"])  # a dependency's dependency
    add_built_project(h.corpus, "blocked", "1.0", [])
    h.corpus.remove_release("leaf", "1.0")
    h.corpus.remove_release("libdep", "1.5")  # libdep<2: only 1.0 left, which needs no leaf
    add_built_project(h.corpus, "libdep", "1.1", ["tinybackend<2"], ["leaf<1.0.post2"])
    configure(h, [*ALLOWLISTED, "needy"], blocklist="blocked")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    expected = [
        "ghost2, requirement of leaf 1.0.post1 <- leaf<1.0.post2, requirement of libdep 1.1 <- libdep<2, requirement of"
        " app 1.0: the upstream has no such project",
        "ghost[hatch]>=0.1.2, build requirement of needy 1.0 (sdist): the upstream has no such project",
        "libdep>=9, requirement of needy 1.0: no release of libdep satisfies it with a file the filters keep",
    ]
    for line in expected:
        assert result.stderr.count(line) == 1, result.stderr
    assert "allowlisted" not in result.stderr and "blocked" not in result.stderr, result.stderr
    assert "blocked" not in kept(h)
    runs = json.loads((h.dir / "run-history.json").read_text())["runs"]
    assert runs[-1]["unsatisfied"] == sorted(expected)
    status = h.cli("status", "--json")
    assert json.loads(status.stdout)["unsatisfied_requirements"] == {"count": 3, "edges": sorted(expected)}
    text = h.cli("status").stdout
    assert "3 requirement edges the mirror cannot satisfy" in text and expected[1] in text, text
