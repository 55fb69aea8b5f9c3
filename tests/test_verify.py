"""verify, delete and sync against the test upstream (issue 6)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bandersnatch_classic.sync import Mirror
from bandersnatch_classic.statefiles import VERIFY_PROGRESS as PROGRESS_FILE
from bandersnatch_classic.verify import verify

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream, expected_html


def mirror_of(h: MirrorHarness) -> Mirror:
    return h.mirror()


def a_file(h: MirrorHarness, name: str) -> Path:
    return next(p for p in h.web("packages").rglob(name))


def test_a_clean_mirror_verifies_clean(harness: MirrorHarness) -> None:
    harness.run()
    result = harness.main("verify", "--delete")
    assert result.returncode == 0, result.stderr
    assert "Verify: clean" in result.stderr.splitlines()[-1]


def test_missing_corrupt_and_truncated_files_are_repaired(harness: MirrorHarness) -> None:
    harness.run()
    a_file(harness, "small-0.2.tar.gz").unlink()
    a_file(harness, "small-0.3.tar.gz").write_bytes(b"corrupt")
    wheel = a_file(harness, "tiny_lib-2.0-py3-none-any.whl")
    wheel.write_bytes(wheel.read_bytes()[:100])
    (a_file(harness, "foo_bar_baz-1.0-py3-none-any.whl.metadata")).write_bytes(b"bad metadata")
    dry = harness.main("verify", "--dry-run")
    assert dry.returncode == 1 and "Would fetch" in dry.stderr
    assert not list(harness.web("packages").rglob("small-0.2.tar.gz"))  # dry run changed nothing
    result = harness.main("verify")
    assert result.returncode == 1 and "repaired" in result.stderr.splitlines()[-1]
    assert_mirror_equals_upstream(harness)
    assert harness.main("verify").returncode == 0


def test_delete_reclaims_unowned_files_and_empty_directories(harness: MirrorHarness) -> None:
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.run()
    doomed = a_file(harness, "doomed-1.0.tar.gz")
    stray = harness.web("packages/zz/yy/stray.tar.gz")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x" * 10)
    temp = doomed.parent / ".partial.tar.gz.tmp"
    temp.write_bytes(b"half")
    harness.corpus.delete_project("doomed")
    harness.run()  # removed from the index, files stay (delete_missing_packages = false)
    assert doomed.exists()
    dry = harness.main("verify", "--delete", "--dry-run")
    assert dry.returncode == 1 and "Would delete" in dry.stderr and stray.exists()
    result = harness.main("verify", "--delete")
    assert result.returncode == 1 and "3 unowned files" in result.stderr.splitlines()[-1]
    assert not doomed.exists() and not stray.exists() and not temp.exists()
    assert not harness.web("packages/zz").exists()
    assert_mirror_equals_upstream(harness)


def test_json_update_names_a_project_its_json_api_denies_and_keeps_it(harness: MirrorHarness) -> None:
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.run()
    doomed = a_file(harness, "doomed-1.0.tar.gz")
    del harness.corpus.projects["doomed"]  # gone without a changelog entry
    # A 404 alone is not the upstream's word: verify names the project and keeps it.
    result = harness.main("verify", "--json-update", "--delete")
    assert result.returncode == 1
    assert "doomed" in result.stderr and "neither its listing nor its changelog says it was removed" in result.stderr
    assert doomed.exists() and harness.web("simple/doomed").exists()
    # The listing no longer naming it is that word: the next full run removes it, verify reclaims its files.
    assert harness.main("mirror", "--force-check").returncode == 0
    assert "doomed" not in harness.web("simple/index.html").read_text() and not harness.web("simple/doomed").exists()
    assert harness.main("verify", "--delete").returncode == 1  # it deleted an unowned file
    assert not doomed.exists()


def test_pages_that_disagree_with_the_stored_metadata_are_regenerated(harness: MirrorHarness) -> None:
    harness.run()
    page = harness.web("simple/small/index.html")
    page.write_text("<!DOCTYPE html><html>tampered</html>")
    assert harness.main("verify").returncode == 1
    assert page.read_text() == expected_html(harness.corpus.projects["small"])


def test_an_interrupted_verify_resumes(harness: MirrorHarness) -> None:
    harness.run()
    m = mirror_of(harness)
    # as left by a verify killed after checking two projects
    m.storage.write_bytes(PROGRESS_FILE, b"foo-bar-baz\nsmall\n")
    report = verify(m)
    assert report.exit_code == 0
    assert report.projects == 3 and report.files == len(harness.expected_files()) - sum(
        1 for p in harness.expected_files() if "tiny" not in p
    )
    assert not m.storage.exists(PROGRESS_FILE)


def test_a_mirror_laid_out_by_the_reference_tool_verifies_clean(harness: MirrorHarness, tmp_path: Path) -> None:
    """HTML pages only (no JSON documents, no v1 pages, no projects.json), as the reference writes them."""
    harness.configure({"json": "false", "simple-format": "HTML"})
    harness.run()
    (harness.dir / "projects.json").unlink()
    assert not harness.web("json").exists()
    result = harness.main("verify", "--delete")
    assert result.returncode == 0, result.stderr
    a_file(harness, "small-0.2.tar.gz").write_bytes(b"bad")
    assert harness.main("verify").returncode == 1
    assert harness.package_files() == harness.expected_files()


def test_delete_command_removes_everything_of_a_project(harness: MirrorHarness) -> None:
    harness.run()
    files_before = harness.package_files()
    dry = harness.main("delete", "--dry-run", "Tiny_Lib")
    assert dry.returncode == 0 and "Would remove" in dry.stderr and harness.web("simple/tiny-lib").exists()
    result = harness.main("delete", "Tiny_Lib")
    assert result.returncode == 0, result.stderr
    assert not harness.web("simple/tiny-lib").exists() and not harness.web("json/tiny-lib").exists()
    assert not harness.web("pypi/tiny-lib").exists()
    assert "tiny-lib" not in harness.web("simple/index.html").read_text()
    assert "tiny-lib" not in harness.web("simple/index.v1_json").read_text()
    left = harness.package_files()
    assert not [p for p in left if "tiny_lib" in p] and len(left) < len(files_before)
    assert harness.main("delete", "no-such-project").returncode == 1


def test_sync_command_syncs_named_projects_without_touching_status(harness: MirrorHarness) -> None:
    harness.run()
    status = (harness.dir / "status").read_text()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("brand-new", "1.0", "brand_new-1.0.tar.gz")
    result = harness.main("sync", "small", "Brand_New")
    assert result.returncode == 0, result.stderr
    assert (harness.dir / "status").read_text() == status and not (harness.dir / "todo").exists()
    assert "small-0.4.tar.gz" in harness.web("simple/small/index.html").read_text()
    assert "brand-new" in harness.web("simple/index.html").read_text()
    result = harness.main("sync", "--skip-simple-root", "Foo.Bar_Baz")
    assert result.returncode == 0
