"""Each filter against the test upstream: what is kept, what is dropped, what the pages list."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .upstream import EPOCH, Corpus, UpstreamServer, make_wheel


def filter_corpus() -> Corpus:
    corpus = Corpus()
    for version in ("0.9", "1.0", "1.1", "2.0rc1", "2.0.dev3"):
        corpus.add_file("Alpha", version, f"alpha-{version}.tar.gz")
    for tag in ("win_amd64", "macosx_10_9_x86_64", "manylinux2014_x86_64", "any"):
        abi = "none" if tag == "any" else "cp37m"
        py = "py3" if tag == "any" else "cp37"
        corpus.add_file("Beta", "1.0", f"beta-1.0-{py}-{abi}-{tag}.whl")
    corpus.add_file("Beta", "1.0", "beta-1.0-cp27-cp27m-manylinux1_x86_64.whl")
    corpus.add_file("Beta", "1.0", "beta-1.0.tar.gz")
    corpus.add_file("Beta", "1.0", "beta-1.0.win32.exe")
    corpus.add_file("gamma-big", "1.0", "gamma_big-1.0.tar.gz", b"g" * 300_000)
    corpus.add_file("delta.tools", "1.0", "delta_tools-1.0.tar.gz", requires_python=">=3.12")
    corpus.add_file("delta.tools", "0.5", "delta_tools-0.5.tar.gz", requires_python=">=2.7")
    corpus.add_file("delta.tools", "0.1", "delta_tools-0.1.tar.gz")
    # time order differs from version order: 0.1 is uploaded last
    corpus.projects["delta-tools"].releases["0.1"][0].upload_time = EPOCH + timedelta(days=999)
    return corpus


@pytest.fixture
def fh(tmp_path: Path):
    with UpstreamServer(filter_corpus()) as server:
        yield MirrorHarness(tmp_path, server)


def listed(h: MirrorHarness, canonical: str) -> list[str]:
    page = h.web(f"simple/{canonical}/index.html")
    return re.findall(r">([^<]+)</a><br/>", page.read_text()) if page.exists() else []


def mirrored_projects(h: MirrorHarness) -> list[str]:
    return re.findall(r'<a href="([^"]+)/">', h.web("simple/index.html").read_text())


def mirrored_files(h: MirrorHarness) -> set[str]:
    return {p.rsplit("/", 1)[1] for p in h.package_files()}


def run(h: MirrorHarness, sections: str) -> None:
    h.configure(sections=sections)
    report = h.run()
    assert report.exit_code == 0, report.failed


def test_no_plugins_section_mirrors_everything(fh: MirrorHarness) -> None:
    run(fh, "")
    assert mirrored_projects(fh) == ["alpha", "beta", "delta-tools", "gamma-big"]


def test_allowlist_project_asks_only_for_listed_projects(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    ALPHA\n    Delta_Tools\n")
    assert mirrored_projects(fh) == ["alpha", "delta-tools"]
    assert not fh.upstream.count("/pypi/Beta") and not fh.upstream.count("/pypi/beta")
    methods = {m for m, _ in fh.upstream.requests if m == "POST"}
    assert methods  # xmlrpc serial, never a listing
    assert not fh.upstream.count("/simple")


def test_blocklist_project_and_regex_project(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled =\n    blocklist_project\n    regex_project\n"
            "[blocklist]\npackages =\n    beta\n    alpha<1.0\n[filter_regex]\npackages =\n    .*-big$\n")
    assert mirrored_projects(fh) == ["alpha", "delta-tools"]  # alpha<1.0 is a release filter line


def test_project_requirements_with_globs(fh: MirrorHarness, tmp_path: Path) -> None:
    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "a.txt").write_text("# comment\n-r other.txt\nalpha==1.0  # pinned\n")
    (reqs / "b.txt").write_text("--index-url http://example.invalid/\ndelta.tools>=0.5 ; python_version >= '3'\n")
    run(fh, f"[plugins]\nenabled =\n    project_requirements\n    project_requirements_pinned\n"
            f"[allowlist]\nrequirements_path = {reqs}\nrequirements =\n    *.txt\n")
    assert mirrored_projects(fh) == ["alpha", "delta-tools"]
    assert listed(fh, "alpha") == ["alpha-1.0.tar.gz"]  # pinned
    # as the reference tool: the versions a requirement asks for, whatever its operator
    assert listed(fh, "delta-tools") == ["delta_tools-1.0.tar.gz", "delta_tools-0.5.tar.gz"]


def test_allowlist_and_blocklist_release_specifiers(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled =\n    allowlist_project\n    allowlist_release\n    blocklist_release\n"
            "[allowlist]\npackages =\n    alpha>=1.0\n    beta\n[blocklist]\npackages =\n    alpha==1.1\n")
    assert listed(fh, "alpha") == ["alpha-1.0.tar.gz", "alpha-2.0rc1.tar.gz", "alpha-2.0.dev3.tar.gz"]
    assert "alpha-0.9.tar.gz" not in mirrored_files(fh)
    assert fh.json_page("alpha")["versions"] == ["1.0", "2.0rc1", "2.0.dev3"]


def test_prerelease_release_everywhere_and_for_named_projects(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = prerelease_release\n")
    assert listed(fh, "alpha") == ["alpha-0.9.tar.gz", "alpha-1.0.tar.gz", "alpha-1.1.tar.gz"]
    fh.configure(sections="[plugins]\nenabled = prerelease_release\n[filter_prerelease]\npackages = beta\n")
    fh.run(force_check=True)
    assert len(listed(fh, "alpha")) == 5


def test_regex_release(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = regex_release\n[filter_regex]\nreleases =\n    .+rc\\d+$\n    .+dev\\d+$\n")
    assert listed(fh, "alpha") == ["alpha-0.9.tar.gz", "alpha-1.0.tar.gz", "alpha-1.1.tar.gz"]


def test_latest_release_by_version_keeps_the_current_one(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = latest_release\n[latest_release]\nkeep = 2\n")
    assert listed(fh, "alpha") == ["alpha-2.0rc1.tar.gz", "alpha-2.0.dev3.tar.gz"]
    # delta.tools' current version (info.version) is 0.1: it takes the place of the older of the two
    assert listed(fh, "delta-tools") == ["delta_tools-1.0.tar.gz", "delta_tools-0.1.tar.gz"]
    assert "delta_tools-0.1.tar.gz" in mirrored_files(fh) and "alpha-1.1.tar.gz" not in mirrored_files(fh)
    assert "delta_tools-0.5.tar.gz" not in mirrored_files(fh)


def test_latest_release_by_time(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = latest_release\n[latest_release]\nkeep = 1\nsort_by = time\n")
    assert listed(fh, "delta-tools") == ["delta_tools-0.1.tar.gz"]


def test_exclude_platform(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms =\n    windows\n    macos\n    py2\n")
    assert listed(fh, "beta") == [
        "beta-1.0-cp37-cp37m-manylinux2014_x86_64.whl",
        "beta-1.0-py3-none-any.whl",
        "beta-1.0.tar.gz",
    ]


def test_exclude_platform_linux_and_a_python_version(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms =\n    linux\n    py3.7\n")
    assert listed(fh, "beta") == ["beta-1.0-py3-none-any.whl", "beta-1.0.tar.gz", "beta-1.0.win32.exe"]


def test_size_project_metadata_spares_allowlisted(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = 100K\n")
    assert "gamma-big" not in mirrored_projects(fh)
    fh.configure(sections="[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = 100K\n"
                          "[allowlist]\npackages = gamma-big\n")
    fh.run(force_check=True)
    assert "gamma-big" in mirrored_projects(fh)


def test_versions_count_project_metadata(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = versions_count_project_metadata\n[versions_count_project_metadata]\nmin_versions = 2\nmax_versions = 4\n")
    assert mirrored_projects(fh) == ["delta-tools"]


def test_regex_project_metadata(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\ninfo.summary =\n    The (Alpha|Beta) project\n")
    assert mirrored_projects(fh) == ["alpha", "beta"]
    fh.configure(sections="[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\nnone:search:info.name =\n    [Dd]elta\n")
    fh.run(force_check=True)
    assert "delta-tools" not in re.findall(r'href="([^"]+)/"', fh.web("simple/index.html").read_text())


def test_regex_release_file_metadata(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = regex_release_file_metadata\n[regex_release_file_metadata]\nrelease_file.packagetype =\n    sdist\n")
    assert listed(fh, "beta") == ["beta-1.0.tar.gz", "beta-1.0.win32.exe"]


def test_version_range_release_file_metadata(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
            "release_file.requires_python = <3.10\n")
    assert listed(fh, "delta-tools") == ["delta_tools-0.5.tar.gz", "delta_tools-0.1.tar.gz"]
    fh.configure(sections="[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
                          "release_file.requires_python = <3.10\nnulls_match = false\n")
    fh.run(force_check=True)
    assert listed(fh, "delta-tools") == ["delta_tools-0.5.tar.gz"]


def test_all_enables_every_filter(fh: MirrorHarness) -> None:
    run(fh, "[plugins]\nenabled = all\n[allowlist]\npackages = alpha\n[latest_release]\nkeep = 1\n")
    assert mirrored_projects(fh) == ["alpha"]
    assert listed(fh, "alpha") == ["alpha-1.1.tar.gz"]  # pre-releases dropped, then the latest


def test_filters_apply_to_sync_too(fh: MirrorHarness) -> None:
    fh.configure(sections="[plugins]\nenabled = blocklist_project\n[blocklist]\npackages = beta\n")
    report = fh.sync_projects("beta", "alpha")
    assert report.exit_code == 0
    assert mirrored_projects(fh) == ["alpha"]


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ("[plugins]\nenabled = no_such_filter\n", "no_such_filter"),
        ("[plugins]\nenabled = regex_project\n[filter_regex]\npackages = ([unclosed\n", "regular expression"),
        ("[plugins]\nenabled = allowlist_release\n[allowlist]\npackages = foo>=>1\n", "specifier"),
        ("[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = lots\n", "size"),
        ("[plugins]\nenabled = latest_release\n[latest_release]\nkeep = -1\n", "keep"),
        ("[plugins]\nenabled = latest_release\n[latest_release]\nsort_by = name\n", "sort_by"),
        ("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
         "release_file.requires_python = about 3\n", "specifier"),
        ("[plugins]\nenabled = project_requirements\n[allowlist]\nrequirements_path = /nonexistent\nrequirements = r.txt\n", "r.txt"),
    ],
)
def test_bad_filter_configs_exit_2_with_one_line(fh: MirrorHarness, sections: str, needle: str) -> None:
    fh.configure(sections=sections)
    result = fh.cli("mirror")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


# -- resolve-dependencies ------------------------------------------------------------------------
def dependency_corpus() -> Corpus:
    corpus = Corpus()

    def wheel(name: str, version: str, requires: list[str], source: str = "") -> None:
        filename, data, meta = make_wheel(name, version, source or f"NAME = {name!r}\n", requires)
        corpus.add_file(name, version, filename, data, metadata=meta)

    wheel("app", "1.0", ["lib-a>=1.0", "pywin-thing; sys_platform == 'win32'", "old-backport; python_version < '3.0'",
                         "test-only; extra == 'test'"],
          "import lib_a\nVALUE = lib_a.VALUE + 1\n")
    wheel("lib-a", "1.0", ["lib-b[fast]"], "import lib_b\nVALUE = lib_b.VALUE + 1\n")
    wheel("lib-b", "1.0", ["lib-c; extra == 'fast'"], "VALUE = 40\n")
    # no .metadata file upstream: its requirements come from the JSON API's info.requires_dist
    filename, data, _ = make_wheel("lib-c", "1.0", "VALUE = 1\n", ["lib-d>=2"])
    corpus.add_file("lib-c", "1.0", filename, data)
    corpus.projects["lib-c"].requires_dist = ["lib-d (>=2)"]
    filename, data, _ = make_wheel("lib-d", "2.0", "VALUE = 2\n")
    corpus.add_file("lib-d", "2.0", filename, data)
    wheel("pywin-thing", "1.0", [])
    wheel("old-backport", "1.0", [])
    wheel("test-only", "1.0", [])
    wheel("unrelated", "1.0", [])
    return corpus


@pytest.fixture
def dh(tmp_path: Path):
    with UpstreamServer(dependency_corpus()) as server:
        yield MirrorHarness(tmp_path, server)


DEPS = "[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = app\nresolve-dependencies = true\n"


def test_resolve_dependencies_mirrors_the_closure_for_the_targets(dh: MirrorHarness) -> None:
    run(dh, DEPS + "python-versions = 3.11 3.12\nplatforms = linux\n")
    assert mirrored_projects(dh) == ["app", "lib-a", "lib-b", "lib-c", "lib-d"]
    dh.configure(sections=DEPS + "python-versions = 3.12\nplatforms = linux windows\n")
    assert dh.run(force_check=True).exit_code == 0  # new targets: --force-check re-reads every project
    assert "pywin-thing" in mirrored_projects(dh) and "old-backport" not in mirrored_projects(dh)
    assert "test-only" not in mirrored_projects(dh) and "unrelated" not in mirrored_projects(dh)


def test_dependencies_stay_followed_on_incremental_runs(dh: MirrorHarness) -> None:
    run(dh, DEPS + "platforms = linux\n")
    filename, data, meta = make_wheel("lib-b", "2.0", "VALUE = 40\n", ["lib-e"])
    dh.corpus.add_file("lib-b", "2.0", filename, data, metadata=meta)
    dh.corpus.add_file("lib-e", "1.0", "lib_e-1.0.tar.gz")
    assert dh.run().exit_code == 0
    assert "lib-e" in mirrored_projects(dh)
    assert "lib_b-2.0-py3-none-any.whl" in listed(dh, "lib-b")


def test_blocklist_wins_over_dependencies(dh: MirrorHarness) -> None:
    run(dh, DEPS.replace("allowlist_project", "allowlist_project\n    blocklist_project") + "[blocklist]\npackages = lib-c\n")
    assert mirrored_projects(dh) == ["app", "lib-a", "lib-b"]


def test_resolve_dependencies_without_an_allowlist_is_a_config_error(dh: MirrorHarness) -> None:
    dh.configure(sections="[allowlist]\nresolve-dependencies = true\n")
    result = dh.cli("mirror")
    assert result.returncode == 2 and "allowlist" in result.stderr


def test_pip_installs_an_allowlisted_project_with_its_dependencies(dh: MirrorHarness, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    run(dh, DEPS)
    target = tmp_path / "site"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
         "--only-binary", ":all:", "--index-url", (dh.dir / "web" / "simple").as_uri(), "--target", str(target), "app"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = subprocess.run([sys.executable, "-c", "import app; print(app.VALUE)"],
                         env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"
