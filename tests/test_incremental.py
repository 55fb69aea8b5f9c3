"""Incremental runs, todo and resume, upstream changes, faults and exit status (issue 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream, expected_html


def test_incremental_run_syncs_only_what_changed(harness: MirrorHarness) -> None:
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("brand-new", "1.0", "brand_new-1.0.tar.gz")
    harness.upstream.clear()
    report = harness.run()
    assert report.exit_code == 0 and report.synced == 2 and report.files == 2
    counts = harness.upstream.counts()
    assert counts == {"xmlrpc": 2, "json": 2, "file": 2}
    assert_mirror_equals_upstream(harness)
    assert int((harness.dir / "status").read_text()) == harness.corpus.serial


def test_changelog_is_paged_when_capped(harness: MirrorHarness) -> None:
    harness.run()
    harness.upstream.changelog_cap = 2
    for i in range(7):
        harness.corpus.add_file(f"paged-{i}", "1.0", f"paged_{i}-1.0.tar.gz")
    harness.upstream.clear()
    assert harness.run().exit_code == 0
    assert harness.upstream.counts()["xmlrpc"] >= 5
    assert_mirror_equals_upstream(harness)


def test_upstream_changes_are_followed(harness: MirrorHarness) -> None:
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.run()
    doomed_file = harness.web(harness.corpus.projects["doomed"].releases["1.0"][0].path.lstrip("/"))
    corpus = harness.corpus
    corpus.add_file("small", "0.4", "small-0.4.tar.gz")  # new release
    corpus.remove_release("Foo.Bar_Baz", "1.1rc1")  # deleted release
    corpus.yank("Tiny-Lib", "2.0", "security issue")  # yanked
    corpus.yank("small", "0.1", False)  # un-yanked
    corpus.remove_file("Foo.Bar_Baz", "Foo.Bar_Baz-1.0.tar.gz")  # a file removed from a release
    corpus.delete_project("doomed")  # deleted project
    report = harness.run()
    assert report.exit_code == 0
    for canonical, spec in corpus.projects.items():
        assert harness.web(f"simple/{canonical}/index.html").read_text() == expected_html(spec)
    assert 'data-yanked="security issue"' in harness.web("simple/tiny-lib/index.html").read_text()
    assert "data-yanked" not in harness.web("simple/small/index.html").read_text().split("small-0.2")[0]
    assert "doomed" not in harness.web("simple/index.html").read_text()
    assert not harness.web("simple/doomed").exists() and not harness.web("json/doomed").exists()
    assert doomed_file.exists(), "without delete_missing_packages the files stay until verify --delete"


def test_delete_missing_packages_removes_files(harness: MirrorHarness) -> None:
    harness.configure({"delete_missing_packages": "true"})
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.run()
    path = harness.web(harness.corpus.projects["doomed"].releases["1.0"][0].path.lstrip("/"))
    assert path.exists()
    harness.corpus.delete_project("doomed")
    harness.run()
    assert not path.exists()
    assert harness.package_files() == harness.expected_files()


def test_a_project_gone_from_a_full_listing_leaves_the_root_index(harness: MirrorHarness) -> None:
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.run()
    del harness.corpus.projects["doomed"]  # vanished without a changelog entry
    harness.run(force_check=True)
    assert "doomed" not in harness.web("simple/index.html").read_text()
    assert "doomed" not in harness.web("simple/index.v1_json").read_text()


# -- todo and resume -------------------------------------------------------------------------
def test_a_todo_is_resumed_towards_its_target(harness: MirrorHarness) -> None:
    harness.run()
    status = int((harness.dir / "status").read_text())
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("Tiny-Lib", "2.1", "tiny_lib-2.1.tar.gz")
    target = harness.corpus.serial
    # as left by a run killed after finishing Tiny-Lib, with small still to do
    (harness.dir / "todo").write_text(f"{target}\nsmall {harness.corpus.projects['small'].serial}\n")
    harness.upstream.clear()
    report = harness.run()
    assert report.exit_code == 0 and report.method == "xmlrpc"
    assert harness.upstream.count("/pypi/small/json") == 1
    assert harness.upstream.count("/pypi/Tiny-Lib/json") == harness.upstream.count("/pypi/tiny-lib/json") == 0
    assert int((harness.dir / "status").read_text()) == target > status
    assert not (harness.dir / "todo").exists()


def test_a_corrupt_todo_is_discarded_with_a_warning(harness: MirrorHarness, caplog: pytest.LogCaptureFixture) -> None:
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    (harness.dir / "todo").write_text("not a serial\ngarbage\n")
    assert harness.run().exit_code == 0
    assert any(
        "todo line 1 holds 'not a serial', not a serial; discarded it" in r.getMessage() and r.levelname == "WARNING"
        for r in caplog.records
    )
    assert_mirror_equals_upstream(harness)


def _root_listing(harness: MirrorHarness) -> dict[str, int]:
    return {p["name"]: p["_last-serial"] for p in json.loads(harness.web("simple/index.v1_json").read_text())["projects"]}


@pytest.mark.parametrize("garbage", [b'{"small": ', b'["not", "an", "object"]', b'{"small": "7"}', b"\xff\xfe{}"])
def test_corrupt_project_records_are_rebuilt_from_the_pages(
    harness: MirrorHarness, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    harness.run()
    before = _root_listing(harness)
    (harness.dir / "projects.json").write_bytes(garbage)
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert harness.run().exit_code == 0
    assert any("rebuilt it from the project pages" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert_mirror_equals_upstream(harness)
    after = _root_listing(harness)
    assert set(after) == set(before) and after["small"] > before["small"]
    assert set(json.loads((harness.dir / "projects.json").read_text())) == {canonicalize_name(n) for n in before}


def test_project_records_in_the_older_form_are_read(harness: MirrorHarness) -> None:
    harness.run()
    before = _root_listing(harness)
    path = harness.dir / "projects.json"
    records = json.loads(path.read_text())
    assert any(isinstance(v, list) for v in records.values())  # display names that differ are kept with them
    older = {c: (v if isinstance(v, list) else [c, v]) for c, v in records.items()}
    path.write_text(json.dumps(older))
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert harness.run().exit_code == 0
    after = _root_listing(harness)
    assert set(after) == set(before) and after["small"] > before["small"]
    assert_mirror_equals_upstream(harness)


def test_records_are_rewritten_only_when_one_changes(harness: MirrorHarness) -> None:
    harness.run()
    path = harness.dir / "projects.json"
    stamp = path.stat().st_mtime_ns
    assert harness.sync_projects("small").exit_code == 0  # current already: same serial, same name
    assert path.stat().st_mtime_ns == stamp
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert harness.sync_projects("small").exit_code == 0
    assert path.stat().st_mtime_ns != stamp


def test_failed_projects_stay_in_todo_while_the_rest_advances(harness: MirrorHarness) -> None:
    harness.run()
    status = int((harness.dir / "status").read_text())
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=502)
    report = harness.run()
    assert report.exit_code == 1 and list(report.failed) == ["small"]
    assert int((harness.dir / "status").read_text()) == status
    assert (harness.dir / "todo").read_text().splitlines()[1:] == [f"small {harness.corpus.projects['small'].serial}"]
    # the rest keeps following the upstream while small keeps failing
    harness.corpus.add_file("Tiny-Lib", "3.0", "tiny_lib-3.0.tar.gz")
    report = harness.run()
    assert report.exit_code == 1 and list(report.failed) == ["small"]
    assert "tiny_lib-3.0.tar.gz" in harness.web("simple/tiny-lib/index.html").read_text()
    assert int((harness.dir / "status").read_text()) == status
    harness.upstream.clear()
    assert harness.run().exit_code == 0
    assert int((harness.dir / "status").read_text()) == harness.corpus.serial
    assert not (harness.dir / "todo").exists()
    assert_mirror_equals_upstream(harness)


def test_cleanup_todo_discards_the_todo(harness: MirrorHarness) -> None:
    harness.run()
    (harness.dir / "todo").write_text(f"{harness.corpus.serial + 5}\nsmall 1\n")
    harness.upstream.clear()
    assert harness.run(cleanup_todo=True).exit_code == 0
    assert harness.upstream.count("/pypi/") == 0
    assert not (harness.dir / "todo").exists()


def test_unknown_generation_is_a_clear_error(harness: MirrorHarness) -> None:
    harness.run()
    (harness.dir / "generation").write_text("99")
    result = harness.main("mirror")
    assert result.returncode == 2 and "generation" in result.stderr and "Traceback" not in result.stderr


def test_an_old_generation_forces_a_full_sync(harness: MirrorHarness) -> None:
    harness.run()
    (harness.dir / "generation").write_text("4")
    harness.upstream.clear()
    assert harness.run().exit_code == 0
    assert harness.upstream.counts()["json"] == 3
    assert (harness.dir / "generation").read_text() == "5"


# -- faults --------------------------------------------------------------------------------
TRANSIENT = [
    ("status", {"status": 503}),
    ("status", {"status": 429, "retry_after": "1"}),
    ("status", {"status": 500}),
    ("reset", {}),
    ("truncate", {}),
    ("corrupt", {}),
]
TARGETS = {
    "json": r"^/pypi/small/json$",
    "file": r"/small-0\.2\.tar\.gz$",
    "metadata": r"\.whl\.metadata$",
    "xmlrpc": r"^POST /pypi$",
}


@pytest.mark.parametrize(
    ("target", "kind", "options"),
    [
        (target, kind, options)
        for target in sorted(TARGETS)
        for kind, options in TRANSIENT
        if not (kind == "corrupt" and target in ("json", "xmlrpc"))  # that is a bad document, not a fault
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_transient_faults_end_in_a_complete_mirror(harness: MirrorHarness, target: str, kind: str, options: dict) -> None:
    harness.upstream.fault(TARGETS[target], kind, times=2, **options)
    report = harness.run()
    assert report.exit_code == 0, report.failed
    assert_mirror_equals_upstream(harness)


@pytest.mark.parametrize("kind", ["reset", "truncate", "corrupt"])
def test_permanent_file_faults_fail_the_project_only(harness: MirrorHarness, kind: str) -> None:
    harness.upstream.fault(r"/small-0\.2\.tar\.gz$", kind, times=None)
    report = harness.run()
    assert report.exit_code == 1 and list(report.failed) == ["small"]
    assert not harness.stray_temporaries()
    assert not list(harness.web("packages").rglob("small-0.2.tar.gz"))
    assert harness.web("simple/tiny-lib/index.html").exists()


def test_socket_timeout_is_retried(harness: MirrorHarness) -> None:
    harness.configure({"timeout": "0.3"})
    harness.upstream.fault(r"^/pypi/small/json$", "hang", times=1)
    harness.upstream.fault(r"/small-0\.2\.tar\.gz$", "hang", times=1)
    assert harness.run().exit_code == 0
    assert_mirror_equals_upstream(harness)


def test_persistent_timeouts_fail_the_project(harness: MirrorHarness) -> None:
    harness.configure({"timeout": "0.2"})
    harness.upstream.fault(r"^/pypi/small/json$", "hang", times=None)
    report = harness.run()
    assert list(report.failed) == ["small"] and report.exit_code == 1


def test_a_stale_page_is_retried(harness: MirrorHarness) -> None:
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.upstream.fault(r"^/pypi/small/json$", "stale", times=2)
    assert harness.run().exit_code == 0
    assert_mirror_equals_upstream(harness)


def test_a_page_that_stays_stale_fails_and_stays_in_todo(harness: MirrorHarness) -> None:
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.upstream.fault(r"^/pypi/small/json$", "stale", times=None)
    report = harness.run()
    assert report.exit_code == 1 and "older than" in report.failed["small"]
    assert "small" in (harness.dir / "todo").read_text()
    assert "small-0.4" not in harness.web("simple/small/index.html").read_text()


def test_a_missing_serial_header_is_not_stale(harness: MirrorHarness) -> None:
    harness.upstream.serial_header = False
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    assert harness.run().exit_code == 0
    assert_mirror_equals_upstream(harness)


def test_an_unreachable_upstream_exits_4_with_one_clear_error(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"master": "http://127.0.0.1:9", "timeout": "1"})
    result = harness.main("mirror", timeout=60)
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert "127.0.0.1:9" in result.stderr


# -- diff file and index versions -----------------------------------------------------------
def test_diff_file_lists_what_was_written(harness: MirrorHarness, tmp_path: Path) -> None:
    diff = tmp_path / "diff.txt"
    harness.configure({"diff-file": str(diff)})
    harness.run()
    listed = set(diff.read_text().splitlines())
    for rel in harness.expected_files():
        assert str(harness.dir / "web" / rel) in listed
    assert str(harness.web("simple/small/index.html")) in listed
    harness.configure({"diff-append-epoch": "true"})
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    before = time.time()
    harness.run()
    stamped = [p for p in tmp_path.glob("diff.txt-*") if int(p.name.split("-")[-1]) >= int(before)]
    assert len(stamped) == 1
    lines = stamped[0].read_text().splitlines()
    assert any(line.endswith("small-0.4.tar.gz") for line in lines)
    assert not any("tiny-lib" in line for line in lines)


def test_keep_index_versions(harness: MirrorHarness) -> None:
    harness.configure({"keep_index_versions": "2"})
    harness.run()
    for version in ("0.4", "0.5", "0.6"):
        harness.corpus.add_file("small", version, f"small-{version}.tar.gz")
        harness.run()
    link = harness.web("simple/small/index.html")
    assert link.is_symlink()
    versions = sorted(p.name for p in harness.web("simple/small/versions").iterdir())
    assert sorted(v.rsplit(".", 1)[1] for v in versions) == ["html", "html", "v1_json", "v1_json"]
    assert link.read_text() == expected_html(harness.corpus.projects["small"])
    assert json.loads(harness.web("simple/small/index.v1_json").read_text())["versions"][-1] == "0.6"


@pytest.mark.parametrize("method", ["xmlrpc", "simple"])
def test_a_change_made_during_a_run_is_not_skipped(harness: MirrorHarness, method: str) -> None:
    """A project fetched at a serial above the run's target must not carry status past other changes."""
    harness.configure({"api-method": method})
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    changed_meanwhile = False

    def meanwhile(_method: str, path: str) -> None:
        nonlocal changed_meanwhile
        if path == "/pypi/small/json" and not changed_meanwhile:
            changed_meanwhile = True  # while "small" is being fetched, two more changes land
            harness.corpus.add_file("Tiny-Lib", "3.0", "tiny_lib-3.0.tar.gz")
            harness.corpus.add_file("small", "0.5", "small-0.5.tar.gz")

    harness.upstream.on_request = meanwhile
    try:
        assert harness.run().exit_code == 0
    finally:
        harness.upstream.on_request = None
    assert changed_meanwhile
    assert harness.run().exit_code == 0
    assert "tiny_lib-3.0.tar.gz" in harness.web("simple/tiny-lib/index.html").read_text()
    assert_mirror_equals_upstream(harness)
