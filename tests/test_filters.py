"""Filters: each one end to end against the test upstream (what is kept, dropped and listed), then
unit tests of FilterSet on projects built from JSON-API-shaped documents."""

from __future__ import annotations

import configparser
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bandersnatch_classic.config import new_parser
from bandersnatch_classic.errors import ConfigError
from bandersnatch_classic.filters import ALL_FILTERS, FilterSet, parse_size
from bandersnatch_classic.filters.metadata import VersionsCountProjectMetadata
from bandersnatch_classic.filters.releases import LatestRelease
from bandersnatch_classic.models import Project

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
    assert fh.json_page("alpha")["versions"] == ["1.0", "2.0.dev3", "2.0rc1"]  # ascending, as the upstream page


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
    result = fh.main("mirror")
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
    result = dh.main("mirror")
    assert result.returncode == 2 and "allowlist" in result.stderr


@pytest.mark.parametrize(
    ("lines", "needles"),
    [
        ("resolve-dependencies = perhaps\n", ["[allowlist] resolve-dependencies", "'perhaps'", "true or false"]),
        ("resolve-dependencies = yes\npython-versions = 3\n", ["[allowlist] python-versions", "'3'"]),
        ("resolve-dependencies = on\nplatforms = beos\n", ["[allowlist] platforms", "'beos'"]),
    ],
)
def test_bad_resolve_dependencies_values_exit_2_with_one_line(dh: MirrorHarness, lines: str, needles: list[str]) -> None:
    dh.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = app\n" + lines)
    result = dh.main("mirror")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0]


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


# -- unit tests: FilterSet on Project objects built from JSON-API-shaped documents ----------------
_TYPES = {".whl": "bdist_wheel", ".exe": "bdist_wininst", ".msi": "bdist_msi", ".egg": "bdist_egg", ".dmg": "bdist_dmg",
          ".rpm": "bdist_rpm"}


def entry(filename: str, size: int = 1000, **fields: Any) -> dict[str, Any]:
    """One file's entry in a JSON API document; packagetype and python_version from its name."""
    packagetype = next((t for end, t in _TYPES.items() if filename.endswith(end)), "sdist")
    python = "source"
    if packagetype == "bdist_wheel":
        python = filename[:-4].split("-")[-3]
    doc = {
        "filename": filename,
        "url": f"https://files.example.invalid/packages/ab/cd/{filename}",
        "digests": {"sha256": "0" * 64},
        "size": size,
        "packagetype": packagetype,
        "python_version": python,
        "requires_python": None,
        "upload_time_iso_8601": "2020-01-01T00:00:00.000000Z",
        "yanked": False,
    }
    doc.update(fields)
    return doc


def project(name: str, releases: dict[str, list[Any]], current: str | None = None, **info: Any) -> Project:
    """A project from ``{version: [filename or entry dict]}``; ``current`` is ``info.version``."""
    doc_releases = {v: [f if isinstance(f, dict) else entry(f) for f in files] for v, files in releases.items()}
    versions = list(releases)
    current = current if current is not None else (versions[-1] if versions else "")
    doc = {
        "info": {"name": name, "version": current, "summary": f"The {name} project", **info},
        "last_serial": 7,
        "releases": doc_releases,
        "urls": doc_releases.get(current, []),
    }
    return Project.from_json(doc, 7)


def filters(text: str, parser: configparser.ConfigParser | None = None) -> FilterSet:
    parser = parser or new_parser()
    parser.read_string(text)
    return FilterSet.from_config(parser)


def files_of(p: Project) -> dict[str, list[str]]:
    return {v: [f.filename for f in files] for v, files in p.releases.items()}


def simple(name: str, *versions: str, current: str | None = None) -> Project:
    slug = name.lower().replace("-", "_")
    return project(name, {v: [f"{slug}-{v}.tar.gz"] for v in versions}, current=current)


# -- enabling ------------------------------------------------------------------------------------
def test_unit_no_plugins_section_enables_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        fs = filters("[blocklist]\npackages = foo\n[latest_release]\nkeep = 1\n")
    assert fs.active == [] and fs.allowlist() is None
    assert fs.allows_name("foo")
    p = simple("foo", "1.0", "2.0")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "2.0"]
    assert "[plugins] enabled is missing" in caplog.text


def test_unit_all_enables_every_filter_and_names_may_share_a_line() -> None:
    assert filters("[plugins]\nenabled = all\n").active == list(ALL_FILTERS)
    fs = filters("[plugins]\nenabled = blocklist_project regex_release\n    blocklist_project\n"
                 "[blocklist]\npackages = a\n[filter_regex]\nreleases = .*dev\n")
    assert fs.active == ["blocklist_project", "regex_release"]
    assert len(ALL_FILTERS) == 16


def test_unit_filter_sections_without_their_plugin_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        filters("[plugins]\nenabled = blocklist_project\n[latest_release]\nkeep = 2\n[blocklist]\nplatforms = windows\n"
                "surprise = 1\npackages = a\n[allowlist]\npackages = b\n")
    assert "[latest_release] has no effect" in caplog.text
    assert "[blocklist] platforms has no effect" in caplog.text
    assert "Unknown key 'surprise' in [blocklist]" in caplog.text
    assert "[allowlist] packages has no effect: enable allowlist_project or allowlist_release" in caplog.text
    assert "[blocklist] packages has no effect" not in caplog.text


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[plugins]\nenabled = nope\n", ["[plugins] enabled", "'nope'", "allowlist_project"]),
        ("[plugins]\nenabled = whitelist_project\n", ["renamed allowlist_project"]),
        ("[plugins]\nenabled = regex_project\n[filter_regex]\npackages = ok\n    ([bad\n", ["[filter_regex] packages", "([bad", "regular expression"]),
        ("[plugins]\nenabled = regex_release\n[filter_regex]\nreleases = *x\n", ["[filter_regex] releases", "regular expression"]),
        ("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\ninfo.name = (\n", ["[regex_project_metadata] info.name"]),
        ("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\nsometimes:info.name = x\n", ["unknown tag", "sometimes"]),
        ("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\ninfo.name =\n", ["no regular expression"]),
        ("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\nnot-null = x\n", ["not-null", "field path"]),
        ("[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = foo>>1\n", ["[allowlist] packages", "foo>>1", "specifier"]),
        ("[plugins]\nenabled = blocklist_release\n[blocklist]\npackages = foo=<1\n", ["[blocklist] packages", "specifier"]),
        ("[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = 1Q\n", ["max_package_size", "'1Q'", "size"]),
        ("[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = -1G\n", ["max_package_size"]),
        ("[plugins]\nenabled = latest_release\n[latest_release]\nkeep = two\n", ["[latest_release] keep", "'two'", "whole number"]),
        ("[plugins]\nenabled = latest_release\n[latest_release]\nsort_by = name\n", ["sort_by", "version or time"]),
        ("[plugins]\nenabled = versions_count_project_metadata\n[versions_count_project_metadata]\nmin_versions = 5\n"
         "max_versions = 2\n", ["min_versions", "max_versions"]),
        ("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
         "release_file.requires_python = >=3.8 or so\n", ["release_file.requires_python", "specifier"]),
        ("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
         "nulls_match = perhaps\n", ["nulls_match", "true or false"]),
        ("[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms = any\n", ["[blocklist] platforms", "'any'"]),
    ],
)
def test_unit_bad_values_are_one_line_config_errors(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        filters(text)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("10K", 10 * 1024), ("500M", 500 * 1024**2), ("1G", 1024**3), ("1.5G", int(1.5 * 1024**3)),
     ("2GiB", 2 * 1024**3), ("1 GB", 1024**3), ("3t", 3 * 1024**4), ("100B", 100), ("0", 0)],
)
def test_unit_sizes(text: str, size: int) -> None:
    assert parse_size(text, "[x] y") == size


# -- project filters -----------------------------------------------------------------------------
def test_unit_allowlist_project_normalises_names() -> None:
    fs = filters("[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    Foo.Bar_baz  # comment\n"
                 "    # a comment line\n    requests>=2.0\n")
    assert fs.allows_name("foo-bar-baz") and fs.allows_name("FOO_BAR.BAZ") and fs.allows_name("Requests")
    assert not fs.allows_name("django")
    assert fs.allowlist() == {"foo-bar-baz", "requests"}
    assert not fs.filter_project(simple("Django", "1.0"))
    assert fs.filter_project(simple("Foo.Bar_Baz", "1.0"))


def test_unit_empty_allowlist_is_a_config_error_unless_under_all(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"allowlist_project is enabled but does nothing: \[allowlist\] packages"):
        filters("[plugins]\nenabled = allowlist_project\n")
    with caplog.at_level(logging.WARNING):
        fs = filters("[plugins]\nenabled = all\n")  # under "all", filters without settings are expected
    assert fs.allowlist() is None and fs.allows_name("anything")
    assert "does nothing" not in caplog.text


def test_unit_allowlist_minus_blocklist_and_dependencies() -> None:
    fs = filters("[plugins]\nenabled = allowlist_project blocklist_project\n[allowlist]\npackages = a\n    b\n"
                 "[blocklist]\npackages = B\n    c<2\n")
    assert fs.allowlist() == {"a"}
    assert fs.allows_dependency("c") and not fs.allows_dependency("b")
    assert not fs.allows_name("c")
    fs = fs.with_allowed(["C_Thing"])
    assert fs.allows_name("c-thing") and "c-thing" in (fs.allowlist() or set())


def test_unit_blocklist_project_ignores_lines_with_specifiers() -> None:
    fs = filters("[plugins]\nenabled = blocklist_project\n[blocklist]\npackages =\n    Evil_Pkg\n    numpy<1.20\n")
    assert not fs.allows_name("evil-pkg") and not fs.allows_name("EVIL.PKG")
    assert fs.allows_name("numpy")


def test_unit_regex_project_matches_from_the_start_in_either_spelling() -> None:
    fs = filters("[plugins]\nenabled = regex_project\n[filter_regex]\npackages =\n    .+-evil$\n    ^test\n")
    assert not fs.allows_name("foo-evil") and not fs.allows_name("Foo_Evil")  # canonical form: foo-evil
    assert not fs.allows_name("testing")
    assert fs.allows_name("my-test") and fs.allows_name("evil-foo")


def test_unit_project_requirements(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "base.txt").write_text(
        "# base\n-r other.txt\n-e git+https://example.invalid/x.git#egg=x\n--index-url https://example.invalid/simple\n"
        "Alpha==1.0  # pinned\nbeta>=2 ; python_version >= '3'\ngamma[extra]\n"
        "delta==3.0 \\\n    --hash=sha256:0000\n./local/path\n"
    )
    (tmp_path / "team-x.txt").write_text("epsilon==1.0 --hash=sha256:00\n")
    (tmp_path / "team-y.txt").write_text("alpha==1.1\n")
    text = (f"[plugins]\nenabled = project_requirements project_requirements_pinned\n[allowlist]\n"
            f"requirements_path = {tmp_path}\nrequirements =\n    base.txt\n    team-*.txt\n")
    with caplog.at_level(logging.WARNING):
        fs = filters(text)
    assert fs.allowlist() == {"alpha", "beta", "gamma", "delta", "epsilon"}
    assert "./local/path" in caplog.text
    p = simple("alpha", "0.9", "1.0", "1.1", "1.2")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "1.1"]  # pins from two files
    p = simple("beta", "1.0", "2.0", "3.0rc1")
    assert fs.filter_project(p) and list(p.releases) == ["2.0", "3.0rc1"]
    p = simple("gamma", "1.0", "2.0")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "2.0"]  # no specifier: every version
    p = simple("delta", "2.0", "3.0")
    assert fs.filter_project(p) and list(p.releases) == ["3.0"]
    assert not fs.filter_project(simple("zeta", "1.0"))


def test_unit_project_requirements_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing.txt"):
        filters(f"[plugins]\nenabled = project_requirements\n[allowlist]\nrequirements_path = {tmp_path}\n"
                "requirements = nothing.txt\n")
    with pytest.raises(ConfigError, match=r"no file matches .*\*\.in"):
        filters(f"[plugins]\nenabled = project_requirements\n[allowlist]\nrequirements_path = {tmp_path}\n"
                "requirements = *.in\n")


def test_unit_project_requirements_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reqs.txt").write_text("foo\n")
    monkeypatch.chdir(tmp_path)
    fs = filters("[plugins]\nenabled = project_requirements\n[allowlist]\nrequirements = reqs.txt\n")
    assert fs.allowlist() == {"foo"}


# -- metadata filters ----------------------------------------------------------------------------
def test_unit_regex_project_metadata_defaults_any_and_match_null() -> None:
    fs = filters("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\ninfo.classifiers =\n"
                 "    .*Python :: 3\n    .*Python :: 2\n")
    assert fs.filter_project(project("a", {"1": ["a-1.tar.gz"]}, classifiers=["Foo", "Programming Language :: Python :: 3"]))
    assert not fs.filter_project(project("b", {"1": ["b-1.tar.gz"]}, classifiers=["Programming Language :: Rust"]))
    assert fs.filter_project(project("c", {"1": ["c-1.tar.gz"]}))  # no classifiers: match-null by default
    assert fs.filter_project(project("d", {"1": ["d-1.tar.gz"]}, classifiers=[]))  # empty counts as null


def test_unit_regex_project_metadata_tags() -> None:
    text = ("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\n"
            "not-null:info.license =\n    MIT\n    BSD\n"
            "all:info.classifiers =\n    .*Python\n"
            "none:search:info.summary =\n    (?i)deprecated\n")
    for parser in (new_parser(), configparser.ConfigParser(delimiters=("=",), interpolation=None)):
        fs = filters(text, parser)
        ok = {"license": "MIT License", "classifiers": ["Programming Language :: Python"], "summary": "A tool"}
        assert fs.filter_project(project("a", {"1": []}, **ok))
        assert not fs.filter_project(project("a", {"1": []}, **{**ok, "license": None}))  # not-null
        assert not fs.filter_project(project("a", {"1": []}, **{**ok, "license": "GPL"}))
        assert not fs.filter_project(project("a", {"1": []}, **{**ok, "classifiers": ["A :: Python", "Rust"]}))  # all
        assert not fs.filter_project(project("a", {"1": []}, **{**ok, "summary": "Now DEPRECATED, use b"}))  # none+search
        assert fs.filter_project(project("a", {"1": []}, **{**ok, "classifiers": None}))  # all, but null matches


def test_unit_regex_project_metadata_other_document_parts() -> None:
    fs = filters("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\nnot-null:last_serial =\n    7$\n")
    assert fs.filter_project(simple("a", "1.0"))
    fs = filters("[plugins]\nenabled = regex_project_metadata\n[regex_project_metadata]\nnot-null:info.yanked =\n    true\n")
    assert fs.filter_project(project("a", {"1": []}, yanked=True))
    assert not fs.filter_project(project("a", {"1": []}, yanked=False))


def test_unit_size_project_metadata() -> None:
    text = "[plugins]\nenabled = size_project_metadata\n[size_project_metadata]\nmax_package_size = 2K\n"
    fs = filters(text)
    assert fs.filter_project(project("small", {"1": [entry("small-1.tar.gz", 1024), entry("small-2.tar.gz", 1024)]}))
    assert not fs.filter_project(project("big", {"1": [entry("big-1.tar.gz", 1024)], "2": [entry("big-2.tar.gz", 1025)]}))
    fs = filters(text + "[allowlist]\npackages = Big\n")
    assert fs.filter_project(project("big", {"1": [entry("big-1.tar.gz", 10**9)]}))
    # with allowlist_project too: only listed projects, and the size limit does not apply to them
    fs = filters(text.replace("size_project_metadata\n", "size_project_metadata allowlist_project\n", 1)
                 + "[allowlist]\npackages = big\n")
    assert fs.active == ["size_project_metadata", "allowlist_project"]
    assert not fs.filter_project(project("small", {"1": [entry("small-1.tar.gz", 10)]}))


def test_unit_versions_count_project_metadata() -> None:
    fs = filters("[plugins]\nenabled = versions_count_project_metadata\n[versions_count_project_metadata]\n"
                 "min_versions = 2\nmax_versions = 3\n")
    assert not fs.filter_project(simple("a", "1"))
    assert fs.filter_project(simple("a", "1", "2")) and fs.filter_project(simple("a", "1", "2", "3"))
    assert not fs.filter_project(simple("a", "1", "2", "3", "4"))
    fs = filters("[plugins]\nenabled = versions_count_project_metadata\n[versions_count_project_metadata]\n"
                 "min_versions = 2\n[allowlist]\npackages = A\n")
    assert fs.filter_project(simple("a", "1")) and not fs.filter_project(simple("b", "1"))  # allowlisted: exempt
    fs = FilterSet([VersionsCountProjectMetadata(maximum=0)])  # idle: named in [plugins] enabled, a config error
    assert fs.filter_project(simple("a", *map(str, range(50))))


# -- release filters -----------------------------------------------------------------------------
def test_unit_allowlist_and_blocklist_release() -> None:
    fs = filters("[plugins]\nenabled = allowlist_release blocklist_release\n[allowlist]\npackages =\n"
                 "    Foo>=1.0,<3\n    foo==0.5\n    bar\n[blocklist]\npackages =\n    foo==1.5\n    foo\n")
    p = simple("foo", "0.4", "0.5", "1.0", "1.5", "2.0rc1", "3.0")
    assert fs.filter_project(p) and list(p.releases) == ["0.5", "1.0", "2.0rc1"]
    p = simple("bar", "1.0", "2.0")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "2.0"]
    p = simple("other", "1.0", "not a version")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "not a version"]  # unlisted: untouched


def test_unit_prerelease_release() -> None:
    fs = filters("[plugins]\nenabled = prerelease_release\n")
    p = simple("a", "1.0", "1.1a1", "1.1b2", "1.1rc1", "1.1.dev0", "1.1.post1", "1.1")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "1.1.post1", "1.1"]
    fs = filters("[plugins]\nenabled = prerelease_release\n[filter_prerelease]\npackages =\n    Numpy\n")
    p = simple("numpy", "1.0", "2.0rc1")
    assert fs.filter_project(p) and list(p.releases) == ["1.0"]
    p = simple("scipy", "1.0", "2.0rc1")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "2.0rc1"]


def test_unit_regex_release() -> None:
    fs = filters("[plugins]\nenabled = regex_release\n[filter_regex]\nreleases =\n    .+alpha\\d$\n    ^0\\.\n")
    p = simple("a", "0.9", "1.0", "1.1alpha1", "1.1")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "1.1"]


def test_unit_latest_release_by_version() -> None:
    fs = filters("[plugins]\nenabled = latest_release\n[latest_release]\nkeep = 2\n")
    p = simple("a", "1.0", "10.0", "2.0", "9.0rc1")  # by version, not by upload order
    assert fs.filter_project(p) and sorted(p.releases) == ["10.0", "9.0rc1"]
    # the current version replaces the oldest of the N latest
    p = simple("a", "1.0", "2.0", "3.0", "4.0", current="1.0")
    assert fs.filter_project(p) and sorted(p.releases) == ["1.0", "4.0"]
    p = simple("a", "1.0", "2.0")
    assert fs.filter_project(p) and list(p.releases) == ["1.0", "2.0"]


def test_unit_latest_release_keep_zero_and_by_time() -> None:
    fs = FilterSet([LatestRelease(keep=0)])  # idle: named in [plugins] enabled, a config error
    p = simple("a", "1", "2", "3")
    assert fs.filter_project(p) and len(p.releases) == 3
    fs = filters("[plugins]\nenabled = latest_release\n[latest_release]\nkeep = 1\nsort_by = time\n")
    p = project("a", {
        "2.0": [entry("a-2.0.tar.gz", upload_time_iso_8601="2020-01-01T00:00:00Z")],
        "1.5": [entry("a-1.5.tar.gz", upload_time_iso_8601="2021-06-01T00:00:00Z")],  # a backport, uploaded later
    }, current="1.5")
    assert fs.filter_project(p) and list(p.releases) == ["1.5"]


def test_unit_latest_release_counts_releases_that_keep_files() -> None:
    fs = filters("[plugins]\nenabled = latest_release exclude_platform\n[latest_release]\nkeep = 1\n"
                 "[blocklist]\nplatforms = windows\n")
    p = project("a", {"1.0": ["a-1.0.tar.gz"], "2.0": ["a-2.0-cp311-cp311-win_amd64.whl"]}, current="1.0")
    assert fs.filter_project(p) and files_of(p) == {"1.0": ["a-1.0.tar.gz"]}


# -- release-file filters ------------------------------------------------------------------------
WHEELS = [
    "a-1.0.tar.gz",
    "a-1.0-py2.py3-none-any.whl",
    "a-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
    "a-1.0-cp37-cp37m-win32.whl",
    "a-1.0-cp37-cp37m-win_amd64.whl",
    "a-1.0-cp37-cp37m-macosx_10_9_x86_64.whl",
    "a-1.0-cp37-cp37m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "a-1.0-cp37-cp37m-musllinux_1_1_aarch64.whl",
    "a-1.0-cp37-abi3-manylinux2014_x86_64.whl",
    "a-1.0-cp311-cp311-macosx_10_9_universal2.whl",
    "a-1.0-cp311-cp311-freebsd_13_0_amd64.whl",
    "a-1.0-py3-none-any.whl",
    "a-1.0.win32-py2.7.exe",
    "a-1.0.win-amd64.msi",
    "a-1.0.dmg",
    entry("a-1.0-py2.7.egg", python_version="2.7"),
    entry("a-1.0-py3.7-linux-x86_64.egg", python_version="3.7"),
]


def platform_files(platforms: str) -> list[str]:
    fs = filters(f"[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms =\n    {platforms}\n")
    p = project("a", {"1.0": list(WHEELS)})
    assert fs.filter_project(p)
    return [f.filename for f in p.files()]


def dropped(platforms: str) -> set[str]:
    names = {w if isinstance(w, str) else w["filename"] for w in WHEELS}
    return names - set(platform_files(platforms))


def test_unit_exclude_platform_families() -> None:
    assert dropped("windows") == {"a-1.0-cp37-cp37m-win32.whl", "a-1.0-cp37-cp37m-win_amd64.whl",
                                  "a-1.0.win32-py2.7.exe", "a-1.0.win-amd64.msi"}
    assert dropped("macos") == {"a-1.0-cp37-cp37m-macosx_10_9_x86_64.whl", "a-1.0-cp311-cp311-macosx_10_9_universal2.whl",
                                "a-1.0.dmg"}
    assert dropped("freebsd") == {"a-1.0-cp311-cp311-freebsd_13_0_amd64.whl"}
    assert dropped("LINUX") == {"a-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
                                "a-1.0-cp37-cp37m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                "a-1.0-cp37-cp37m-musllinux_1_1_aarch64.whl", "a-1.0-cp37-abi3-manylinux2014_x86_64.whl",
                                "a-1.0-py3.7-linux-x86_64.egg"}


def test_unit_exclude_platform_pythons() -> None:
    assert dropped("py2") == {"a-1.0-cp27-cp27mu-manylinux1_x86_64.whl", "a-1.0.win32-py2.7.exe", "a-1.0-py2.7.egg"}
    # cp37-abi3 also runs on 3.8+, py3-none-any on every Python 3: neither is "only for 3.7"
    assert dropped("py3.7") == {"a-1.0-cp37-cp37m-win32.whl", "a-1.0-cp37-cp37m-win_amd64.whl",
                                "a-1.0-cp37-cp37m-macosx_10_9_x86_64.whl",
                                "a-1.0-cp37-cp37m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                "a-1.0-cp37-cp37m-musllinux_1_1_aarch64.whl", "a-1.0-py3.7-linux-x86_64.egg"}
    assert "a-1.0-cp37-abi3-manylinux2014_x86_64.whl" in dropped("py3")
    assert "a-1.0-py2.py3-none-any.whl" not in dropped("py2 py3.7")


def test_unit_exclude_platform_specific_tags_and_sources_stay() -> None:
    assert dropped("manylinux2014_x86_64") == {"a-1.0-cp37-cp37m-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                                               "a-1.0-cp37-abi3-manylinux2014_x86_64.whl"}
    assert dropped("win32") == {"a-1.0-cp37-cp37m-win32.whl", "a-1.0.win32-py2.7.exe"}
    kept = platform_files("windows macos linux freebsd py2")
    assert "a-1.0.tar.gz" in kept and "a-1.0-py3-none-any.whl" in kept


def test_unit_exclude_platform_does_not_match_the_project_name() -> None:
    fs = filters("[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms = windows linux\n")
    p = project("pywin32-linux", {"1.0": [entry("pywin32_linux-1.0-py2.7.egg", python_version="2.7")]})
    assert fs.filter_project(p) and len(list(p.files())) == 1


def test_unit_regex_release_file_metadata() -> None:
    text = ("[plugins]\nenabled = regex_release_file_metadata\n[regex_release_file_metadata]\n"
            "any:release_file.packagetype =\n    sdist\n    bdist_wheel\n")
    fs = filters(text)
    p = project("a", {"1.0": ["a-1.0.tar.gz", "a-1.0-py3-none-any.whl", "a-1.0.win32.exe", "a-1.0-py2.7.egg"]})
    assert fs.filter_project(p) and files_of(p) == {"1.0": ["a-1.0.tar.gz", "a-1.0-py3-none-any.whl"]}
    # release is the version string; info the project's
    fs = filters("[plugins]\nenabled = regex_release_file_metadata\n[regex_release_file_metadata]\n"
                 "release =\n    1\\.\ninfo.name =\n    a$\nnone:release_file.filename =\n    .*\\.exe$\n")
    p = project("a", {"0.9": ["a-0.9.tar.gz"], "1.0": ["a-1.0.tar.gz", "a-1.0.win32.exe"]})
    assert fs.filter_project(p) and files_of(p) == {"1.0": ["a-1.0.tar.gz"]}
    fs = filters("[plugins]\nenabled = regex_release_file_metadata\n[regex_release_file_metadata]\n"
                 "not-null:release_file.yanked =\n    false\n")
    p = project("a", {"1.0": [entry("a-1.0.tar.gz", yanked=True)], "1.1": [entry("a-1.1.tar.gz")]})
    assert fs.filter_project(p) and list(p.releases) == ["1.1"]


def test_unit_version_range_release_file_metadata_with_versions() -> None:
    # as the reference tool: the value lists versions; a file is kept if its requires_python admits one
    fs = filters("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
                 "release_file.requires_python =\n    3.8\n    3.9\n")
    p = project("a", {"1": [entry("a-1.tar.gz", requires_python=">=3.9")], "2": [entry("a-2.tar.gz", requires_python=">=3.10")],
                      "3": [entry("a-3.tar.gz", requires_python="<3,>=2.7")], "4": [entry("a-4.tar.gz")],
                      "5": [entry("a-5.tar.gz", requires_python="")]})
    assert fs.filter_project(p) and list(p.releases) == ["1", "4", "5"]  # 4 and 5: no value, nulls match


def test_unit_version_range_release_file_metadata_with_ranges() -> None:
    fs = filters("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
                 "release_file.requires_python = <3.9\nnulls_match = false\n")
    p = project("a", {"1": [entry("a-1.tar.gz", requires_python=">=3.8.1")], "2": [entry("a-2.tar.gz", requires_python=">=3.9")],
                      "3": [entry("a-3.tar.gz", requires_python="!=3.0.*,>=2.7")], "4": [entry("a-4.tar.gz")],
                      "5": [entry("a-5.tar.gz", requires_python=">=3.8.10,<3.8.11")]})
    assert fs.filter_project(p) and list(p.releases) == ["1", "3", "5"]
    fs = filters("[plugins]\nenabled = version_range_release_file_metadata\n[version_range_release_file_metadata]\n"
                 "not-null:release =\n    >=2.0\n    1.5\n")
    p = simple("a", "1.0", "1.5", "2.0", "2.1rc1")
    assert fs.filter_project(p) and list(p.releases) == ["1.5", "2.0", "2.1rc1"]


# -- the whole pass ------------------------------------------------------------------------------
def test_unit_versions_emptied_by_file_filters_go_but_empty_upstream_versions_stay() -> None:
    fs = filters("[plugins]\nenabled = exclude_platform\n[blocklist]\nplatforms = windows\n")
    p = project("a", {"0.1": [], "1.0": ["a-1.0-cp311-cp311-win_amd64.whl"], "2.0": ["a-2.0.tar.gz"]})
    assert fs.filter_project(p) and files_of(p) == {"0.1": [], "2.0": ["a-2.0.tar.gz"]}
    p = project("b", {"1.0": ["b-1.0-cp311-cp311-win_amd64.whl"]})
    assert fs.filter_project(p) and p.releases == {}  # nothing left, but not dropped by a project filter
    assert p.document()["releases"] == {} and p.document()["urls"] == []


def test_unit_filter_project_applies_name_filters_too() -> None:
    fs = filters("[plugins]\nenabled = blocklist_project\n[blocklist]\npackages = foo.bar\n")
    assert not fs.filter_project(simple("Foo_Bar", "1.0"))


def test_unit_all_with_sections() -> None:
    fs = filters("[plugins]\nenabled = all\n[allowlist]\npackages = alpha>=1.0\n[blocklist]\nplatforms = windows\n"
                 "[latest_release]\nkeep = 2\n")
    p = project("Alpha", {"0.5": ["alpha-0.5.tar.gz"], "1.0": ["alpha-1.0.tar.gz"], "1.1": ["alpha-1.1.tar.gz"],
                          "1.2": ["alpha-1.2-cp311-cp311-win_amd64.whl"], "2.0b1": ["alpha-2.0b1.tar.gz"]})
    assert fs.filter_project(p) and files_of(p) == {"1.0": ["alpha-1.0.tar.gz"], "1.1": ["alpha-1.1.tar.gz"]}
    assert not fs.filter_project(simple("beta", "1.0"))
