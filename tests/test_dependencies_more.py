"""resolve-dependencies with extras, and resolve-build-dependencies from the stored sdists
(issue 13), through the command line against the test upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bandersnatch_classic.dependencies import DEFAULT_BUILD_REQUIRES, build_requirements

from .conftest import MirrorHarness
from .test_serve import Running, _clean_env
from .upstream import Corpus, make_sdist, make_wheel


def mirrored(h: MirrorHarness) -> set[str]:
    return {p.name for p in h.web("simple").iterdir() if p.is_dir()}


def wheel_project(corpus: Corpus, name: str, version: str = "1.0", requires: list[str] | None = None) -> None:
    wheel, data, meta = make_wheel(name, version, requires=requires)
    corpus.add_file(name, version, wheel, data, metadata=meta)


def allowlist(h: MirrorHarness, packages: list[str], extra: str = "") -> None:
    """Enable the filters the settings use: a filter named in [plugins] enabled that does nothing stops the run."""
    lines = "".join(f"    {p}\n" for p in packages)
    enabled = ["allowlist_project"] if packages else []
    enabled += ["project_requirements"] if "requirements =" in extra else []
    enabled += ["blocklist_project"] if "[blocklist]" in extra else []
    h.configure(sections=f"[plugins]\nenabled = {' '.join(enabled)}\n[allowlist]\npackages =\n{lines}{extra}")


@pytest.fixture
def extras_corpus(harness: MirrorHarness) -> MirrorHarness:
    harness.corpus.projects.clear()
    wheel_project(harness.corpus, "requests", requires=[
        "urllib3", 'PySocks!=1.5.7,>=1.5.6; extra == "socks"', 'chardet; extra == "use-chardet"'])
    wheel_project(harness.corpus, "urllib3", requires=['brotli; extra == "brotli"', 'pysocks; extra == "socks"'])
    wheel_project(harness.corpus, "PySocks", "1.7.1")
    wheel_project(harness.corpus, "chardet")
    wheel_project(harness.corpus, "brotli")
    wheel_project(harness.corpus, "app", requires=["urllib3[brotli]"])
    return harness


# -- 5. extras -------------------------------------------------------------------------------
def test_extras_in_the_allowlist_and_of_dependencies_are_followed(extras_corpus: MirrorHarness, tmp_path: Path) -> None:
    h = extras_corpus
    allowlist(h, ["requests[socks]", "app"], "resolve-dependencies = true\n")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    # pysocks from requests[socks]; brotli from app's urllib3[brotli]; chardet's extra not asked
    assert mirrored(h) == {"requests", "urllib3", "pysocks", "app", "brotli"}
    target = tmp_path / "site"
    running = Running(h.dir / "web")
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
               "--no-input", "--index-url", running.index, "--target", str(target), "requests[socks]"]
        installed = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=120)
    finally:
        running.stop()
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert {"requests", "urllib3", "pysocks"} <= {p.name for p in target.iterdir()}


def test_extras_in_requirements_files_are_followed(extras_corpus: MirrorHarness, tmp_path: Path) -> None:
    h = extras_corpus
    (tmp_path / "requirements.txt").write_text("requests[use-chardet]==1.0  # pinned\n")
    allowlist(h, [], f"requirements_path = {tmp_path}\nrequirements = requirements.txt\nresolve-dependencies = true\n")
    assert h.main("mirror").returncode == 0
    assert mirrored(h) == {"requests", "urllib3", "chardet"}


# -- 6. build dependencies -------------------------------------------------------------------------
@pytest.fixture
def build_corpus(harness: MirrorHarness) -> MirrorHarness:
    corpus = harness.corpus
    corpus.projects.clear()

    def sdist(name: str, version: str, requires: list[str] | None, fmt: str = "tar.gz") -> None:
        filename, data = make_sdist(name, version, requires, fmt)
        corpus.add_file(name, version, filename, data)

    sdist("app", "1.0", ["flit_core>=3.2,<4"])  # tar.gz with a pyproject.toml
    sdist("zipped", "1.0", ["hatchling", 'tomli; python_version < "3.0"', "forbidden"], fmt="zip")
    sdist("legacy", "1.0", None)  # no pyproject.toml: setuptools and wheel
    sdist("flit-core", "3.9", [], fmt="tar.gz")  # flit_core builds itself
    wheel_project(corpus, "flit-core", "3.9")
    wheel_project(corpus, "hatchling", requires=["packaging>=21"])
    sdist("hatchling", "1.0", ["packaging"], fmt="zip")
    wheel_project(corpus, "packaging")
    wheel_project(corpus, "setuptools")
    sdist("wheel", "0.42", ["flit_core>=3.8,<4"])
    wheel_project(corpus, "tomli")
    wheel_project(corpus, "forbidden")
    return harness


def test_build_dependencies_are_mirrored_from_the_stored_sdists(build_corpus: MirrorHarness) -> None:
    h = build_corpus
    allowlist(h, ["app", "zipped", "legacy"], "resolve-build-dependencies = true\n[blocklist]\npackages = forbidden\n")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert mirrored(h) == {"app", "zipped", "legacy", "flit-core", "hatchling", "packaging", "setuptools", "wheel"}
    assert "nested-only" not in result.stderr


def test_without_resolve_build_dependencies_no_build_dependency_is_mirrored(build_corpus: MirrorHarness) -> None:
    h = build_corpus
    allowlist(h, ["app", "zipped", "legacy"], "resolve-dependencies = true\n")
    assert h.main("mirror").returncode == 0
    assert mirrored(h) == {"app", "zipped", "legacy"}


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_build_requirements_of_an_sdist(tmp_path: Path, fmt: str) -> None:
    filename, data = make_sdist("demo", "1.0", ["flit_core >=3.2,<4", "x; os_name == 'nt'"], fmt)
    (tmp_path / filename).write_bytes(data)
    assert build_requirements(tmp_path / filename) == ["flit_core >=3.2,<4", "x; os_name == 'nt'"]
    filename, data = make_sdist("old", "1.0", None, fmt)
    (tmp_path / filename).write_bytes(data)
    assert build_requirements(tmp_path / filename) == list(DEFAULT_BUILD_REQUIRES)
    filename, data = make_sdist("nosys", "1.0", None, fmt, pyproject='[tool.black]\nline-length = 99\n')
    (tmp_path / filename).write_bytes(data)
    assert build_requirements(tmp_path / filename) == list(DEFAULT_BUILD_REQUIRES)
    broken = tmp_path / f"broken-1.0.{fmt}"
    broken.write_bytes(b"not an archive")
    assert build_requirements(broken) == []


# -- 7. exclude_platform and interpreter-specific tags -----------------------------------------
def test_exclude_platform_python_version_covers_every_interpreter(harness: MirrorHarness) -> None:
    corpus = harness.corpus
    corpus.projects.clear()
    tags = ["cp312-cp312-manylinux_2_17_x86_64", "graalpy312-graalpy242_312_native-manylinux_2_17_x86_64",
            "pp312-pypy312_pp73-manylinux_2_17_x86_64", "py312-none-any", "cp311-cp311-manylinux_2_17_x86_64",
            "graalpy311-graalpy242_311_native-manylinux_2_17_x86_64", "pp310-pypy310_pp73-win_amd64",
            "cp312-abi3-manylinux_2_17_x86_64", "py3-none-any"]
    for tag in tags:
        corpus.add_file("native", "1.0", f"native-1.0-{tag}.whl")
    harness.configure(sections="[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms = py3.12\n")
    assert harness.main("mirror").returncode == 0
    kept = {f["filename"].removeprefix("native-1.0-").removesuffix(".whl") for f in harness.json_page("native")["files"]}
    assert kept == {"cp311-cp311-manylinux_2_17_x86_64", "graalpy311-graalpy242_311_native-manylinux_2_17_x86_64",
                    "pp310-pypy310_pp73-win_amd64", "cp312-abi3-manylinux_2_17_x86_64", "py3-none-any"}


def test_resolve_build_dependencies_needs_an_allowlist(harness: MirrorHarness) -> None:
    harness.configure(sections="[allowlist]\nresolve-build-dependencies = true\n")
    result = harness.main("mirror")
    assert result.returncode == 2 and "resolve-build-dependencies = true needs an allowlist" in result.stderr, result.stderr
