"""Filters built from typed values, without an INI file: each filter's own idle() reason, the
shared specifier test, and FilterSet.with_allowed leaving the set it came from as it was."""

from __future__ import annotations

import re
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bandersnatch_classic.config import new_parser
from bandersnatch_classic.filters import FilterSet
from bandersnatch_classic.filters.metadata import (
    Condition,
    RegexProjectMetadata,
    RegexReleaseFileMetadata,
    SizeProjectMetadata,
    VersionRange,
    VersionRangeReleaseFileMetadata,
    VersionsCountProjectMetadata,
)
from bandersnatch_classic.filters.names import AllowlistProject, BlocklistProject, ProjectRequirements, RegexProject
from bandersnatch_classic.filters.platforms import ExcludePlatform
from bandersnatch_classic.filters.releases import (
    AllowlistRelease,
    BlocklistRelease,
    LatestRelease,
    PrereleaseRelease,
    ProjectRequirementsPinned,
    RegexRelease,
    admits,
)

from .test_filters import entry, project, simple

#: (a filter with nothing to do, its idle() reason, the same kind with something to do)
IDLE_CASES: list[tuple[Any, str, Any]] = [
    (AllowlistProject(), "[allowlist] packages names no project, so every project is allowed", AllowlistProject(["a"])),
    (ProjectRequirements(), "[allowlist] requirements name no project, so every project is allowed",
     ProjectRequirements(["a"])),
    (BlocklistProject(), "[blocklist] packages names no project (without a version specifier)", BlocklistProject(["a"])),
    (RegexProject(), "[filter_regex] packages is empty", RegexProject([re.compile("x")])),
    (RegexRelease(), "[filter_regex] releases is empty", RegexRelease([re.compile("x")])),
    (SizeProjectMetadata(0), "[size_project_metadata] max_package_size is not set", SizeProjectMetadata(10)),
    (VersionsCountProjectMetadata(), "[versions_count_project_metadata] sets neither min_versions nor max_versions",
     VersionsCountProjectMetadata(maximum=3)),
    (RegexProjectMetadata([]), "[regex_project_metadata] has no keys",
     RegexProjectMetadata([Condition("info.name", [re.compile("x")])])),
    (RegexReleaseFileMetadata([]), "[regex_release_file_metadata] has no keys",
     RegexReleaseFileMetadata([Condition("release", [re.compile("1")])])),
    (VersionRangeReleaseFileMetadata([]), "[version_range_release_file_metadata] has no keys",
     VersionRangeReleaseFileMetadata([VersionRange("release_file.requires_python", [Version("3.9")])])),
    (AllowlistRelease({}), "[allowlist] packages has no line with a version specifier",
     AllowlistRelease({"a": [SpecifierSet(">1")]})),
    (BlocklistRelease({}), "[blocklist] packages has no line with a version specifier",
     BlocklistRelease({"a": [SpecifierSet(">1")]})),
    (ProjectRequirementsPinned({}), "[allowlist] requirements name no project", ProjectRequirementsPinned({"a": []})),
    (LatestRelease(0), "[latest_release] keep is 0 or not set", LatestRelease(2)),
    (ExcludePlatform(), "[blocklist] platforms is empty", ExcludePlatform(pythons=[("2", None)])),
]


@pytest.mark.parametrize(("idle", "reason", "busy"), IDLE_CASES, ids=lambda v: getattr(v, "name", None))
def test_each_filter_says_why_it_is_idle(idle: Any, reason: str, busy: Any) -> None:
    assert idle.idle() == reason
    assert busy.idle() is None


def test_idle_cases_cover_every_filter_but_prerelease() -> None:
    from bandersnatch_classic.filters import ALL_FILTERS

    covered = {type(case[0]).name for case in IDLE_CASES}
    assert covered == set(ALL_FILTERS) - {"prerelease_release"}
    assert PrereleaseRelease().idle() is None  # with no list it drops pre-releases of every project


def test_typed_filters_make_a_filter_set_without_config() -> None:
    fs = FilterSet([
        AllowlistProject(["Alpha", "beta.tools"], extras={"Alpha": ["socks"]}),
        BlocklistProject(["Beta_Tools"]),
        AllowlistRelease({"ALPHA": [SpecifierSet(">=1.0"), SpecifierSet("==0.5")]}),
        PrereleaseRelease(),
        ExcludePlatform(fragments=["win"]),
        LatestRelease(2),
    ])
    assert fs.active == [
        "allowlist_project", "blocklist_project", "allowlist_release", "prerelease_release", "exclude_platform",
        "latest_release",
    ]
    assert fs.allowlist() == {"alpha"}
    assert fs.extras() == {"alpha": {"socks"}}
    assert not fs.allows_name("beta-tools") and not fs.allows_name("gamma")
    p = project("alpha", {
        "0.4": ["alpha-0.4.tar.gz"], "0.5": ["alpha-0.5.tar.gz"], "1.0": ["alpha-1.0-py3-none-win_amd64.whl"],
        "1.1": ["alpha-1.1.tar.gz"], "2.0": ["alpha-2.0.tar.gz"], "3.0rc1": ["alpha-3.0rc1.tar.gz"],
    }, current="1.1")
    assert fs.filter_project(p)
    # 0.4 not admitted; 1.0 loses its only (Windows) file; 3.0rc1 is a pre-release; of 0.5, 1.1
    # and 2.0 the latest two are kept
    assert list(p.releases) == ["1.1", "2.0"]


def test_pins_keep_the_newest_release_each_edge_needs_past_the_release_filters() -> None:
    fs = FilterSet([
        PrereleaseRelease(), BlocklistRelease({"lib": [SpecifierSet("==1.4")]}), ExcludePlatform(fragments=["win"]),
        LatestRelease(1),
    ])
    releases = {
        "0.9": ["lib-0.9.tar.gz"], "1.0": ["lib-1.0.tar.gz"], "1.3": ["lib-1.3-py3-none-win_amd64.whl"],
        "1.4": ["lib-1.4.tar.gz"], "1.5": [entry("lib-1.5.tar.gz", yanked=True)], "1.6rc1": ["lib-1.6rc1.tar.gz"],
        "not-pep-440": ["lib-x.tar.gz"], "2.0": ["lib-2.0.tar.gz"], "3.0b1": ["lib-3.0b1.tar.gz"],
    }
    plain = project("lib", releases, current="2.0")
    assert fs.filter_project(plain) and list(plain.releases) == ["2.0"]  # the filters' choice, without pins
    pinned = fs.with_pins({"Lib": [SpecifierSet("<2"), SpecifierSet(">=2"), SpecifierSet("<1"), SpecifierSet(">=3.0b1")]})
    assert pinned.with_allowed(["x"]).pins == pinned.pins and not fs.pins
    p = project("lib", releases, current="2.0")
    assert pinned.filter_project(p)
    # <2: not 1.6rc1 (pre-release), 1.5 (yanked), 1.4 (blocklisted) or 1.3 (no file kept): 1.0;
    # >=2: 2.0 is kept already; <1: 0.9; >=3.0b1 names a pre-release: 3.0b1
    assert sorted(p.releases) == ["0.9", "1.0", "2.0", "3.0b1"]


def test_with_allowed_returns_a_wider_set_and_leaves_this_one() -> None:
    fs = FilterSet([ProjectRequirements(["a"]), BlocklistProject(["blocked"])])
    wider = fs.with_allowed(["Dep_One", "blocked"])
    assert wider is not fs
    assert wider.allows_name("dep-one") and wider.allowlist() == {"a", "dep-one"}
    assert not wider.allows_name("blocked")  # admitted names still meet every other filter
    assert not fs.allows_name("dep-one") and fs.allowlist() == {"a"}
    assert wider.with_allowed(["two"]).allowlist() == {"a", "dep-one", "two"}
    assert wider.filter_project(simple("Dep.One", "1.0")) and not fs.filter_project(simple("Dep.One", "1.0"))


def test_with_allowed_changes_nothing_without_an_allowlist() -> None:
    fs = FilterSet([BlocklistProject(["x"])]).with_allowed(["y"])
    assert fs.allowlist() is None and fs.allows_name("z") and not fs.allows_name("x")


def test_one_specifier_test_for_every_release_filter() -> None:
    specs = [SpecifierSet("<1.0"), SpecifierSet("==2.0.*")]
    assert admits(specs, "0.9") and admits(specs, "2.0.1") and admits(specs, "2.0.1rc1")  # pre-releases count
    assert not admits(specs, "1.5") and not admits(specs, "not a version") and not admits([], "1.0")
    p = simple("foo", "0.9", "1.5", "2.0.1")
    for f, kept in (
        (AllowlistRelease({"Foo": specs}), ["0.9", "2.0.1"]),
        (ProjectRequirementsPinned({"foo": specs}), ["0.9", "2.0.1"]),
        (BlocklistRelease({"foo": specs}), ["1.5"]),
    ):
        assert [v for v in p.releases if f.keeps(p, v)] == kept
    assert all(ProjectRequirementsPinned({"foo": []}).keeps(p, v) for v in p.releases)  # unpinned: every version


def test_from_config_gives_the_typed_values() -> None:
    parser = new_parser()
    parser.read_string(
        "[allowlist]\npackages = Foo>=1\n    bar\n[blocklist]\npackages = Baz\n    qux<2\nplatforms = windows py2.7\n"
        "[latest_release]\nkeep = 3\nsort_by = time\n[size_project_metadata]\nmax_package_size = 1K\n"
        "[regex_project_metadata]\nnot-null:search:info.summary = fast\n"
    )
    assert AllowlistProject.from_config(parser).names == {"foo", "bar"}
    assert AllowlistRelease.from_config(parser).specifiers == {"foo": (SpecifierSet(">=1"),)}
    assert BlocklistProject.from_config(parser).names == {"baz"}
    assert BlocklistRelease.from_config(parser).specifiers == {"qux": (SpecifierSet("<2"),)}
    latest = LatestRelease.from_config(parser)
    assert (latest.keep, latest.sort_by) == (3, "time")
    size = SizeProjectMetadata.from_config(parser)
    assert (size.limit, size.allowed) == (1024, {"foo", "bar"})
    platforms = ExcludePlatform.from_config(parser)
    assert "win32" in platforms.fragments and ".exe" in platforms.endings and platforms.pythons == [("2", "7")]
    (condition,) = RegexProjectMetadata.from_config(parser).conditions
    assert (condition.path, condition.nulls_match, condition.key) == ("info.summary", False, "not-null:search:info.summary")
    assert condition.holds({"info": {"summary": "a fast thing"}}) and not condition.holds({"info": {}})
