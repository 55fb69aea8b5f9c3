"""A small run on a large mirror writes what changed, not every record (docs/performance.md).

The mirror is laid down as a completed full sync leaves it, the way the benchmark seeds a
million projects: a record for each of the upstream's 4,500 projects (more than
``JOURNAL_FROM`` of records), ``status`` at the upstream's serial, and pages for a few,
written by ``sync``, which renders the root index from the records.
"""

from __future__ import annotations

import json
import re

import pytest
from packaging.utils import canonicalize_name

from bandersnatch_classic.statefiles import JOURNAL_FROM

from .conftest import MirrorHarness
from .upstream import bulk_corpus


@pytest.fixture
def seeded(harness: MirrorHarness) -> MirrorHarness:
    h = harness
    bulk_corpus(4500, releases=1, files=1, size=64, corpus=h.corpus)
    h.configure({"api-method": "xmlrpc"})
    h.dir.mkdir(parents=True)
    records = {c: p.serial if p.name == c else [p.name, p.serial] for c, p in h.corpus.projects.items()}
    (h.dir / "projects.json").write_text(json.dumps(records, separators=(",", ":")))
    (h.dir / "generation").write_text("5")
    (h.dir / "status").write_text(str(h.corpus.serial))
    assert (h.dir / "projects.json").stat().st_size > JOURNAL_FROM
    result = h.main("sync", "bulk-0001", "bulk-2000", "small", "Tiny-Lib")
    assert result.returncode == 0, result.stderr
    assert not (h.dir / "projects.journal").exists()  # records unchanged by the sync
    h.upstream.clear()
    return h


def expected_root_json(h: MirrorHarness) -> dict:
    projects = sorted(h.corpus.projects.items())
    return {"meta": {"api-version": "1.1", "_last-serial": h.corpus.serial},
            "projects": [{"name": p.name, "_last-serial": p.serial} for _, p in projects]}


def root_html_names(h: MirrorHarness) -> list[str]:
    return re.findall(r'<a href="([^"]+)/">', h.web("simple/index.html").read_text())


def test_the_seeded_mirror_is_up_to_date(seeded: MirrorHarness) -> None:
    h = seeded
    state = {p: p.read_bytes() for p in (h.dir / "projects.json", h.web("simple/index.v1_json"))}
    result = h.main("mirror")
    assert result.returncode == 0 and h.upstream.count() == 1, result.stderr
    assert {p: p.read_bytes() for p in state} == state


def test_changed_records_go_to_the_journal_and_the_root_json_is_set_in_place(seeded: MirrorHarness) -> None:
    h = seeded
    base = (h.dir / "projects.json").read_bytes()
    html = h.web("simple/index.html").stat().st_mtime_ns
    h.corpus.add_file("bulk-2000", "9.0", "bulk_2000-9.0.tar.gz", b"n" * 64)
    h.corpus.add_file("Tiny-Lib", "9.0", "tiny_lib-9.0.tar.gz", b"t" * 64)
    h.corpus.touch("bulk-3000")  # a project whose pages the seeding left out: synced now

    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert (h.dir / "projects.json").read_bytes() == base  # not rewritten
    lines = (h.dir / "projects.journal").read_text().splitlines()
    serial = {c: h.corpus.projects[c].serial for c in ("bulk-2000", "tiny-lib", "bulk-3000")}
    assert [json.loads(line) for line in lines] == [
        {"bulk-2000": serial["bulk-2000"], "tiny-lib": ["Tiny-Lib", serial["tiny-lib"]], "bulk-3000": serial["bulk-3000"]}
    ]
    assert h.web("simple/index.html").stat().st_mtime_ns == html  # no name changed
    assert json.loads(h.web("simple/index.v1_json").read_text()) == expected_root_json(h)

    h.upstream.clear()
    again = h.main("mirror")  # the journal is read back: nothing to do
    assert again.returncode == 0 and h.upstream.count() == 1, again.stderr
    assert len((h.dir / "projects.journal").read_text().splitlines()) == 1


def test_a_new_and_a_removed_project_go_to_the_journal_and_both_root_pages(seeded: MirrorHarness) -> None:
    h = seeded
    h.corpus.add_file("Newcomer", "1.0", "newcomer-1.0.tar.gz", b"c" * 64)
    h.corpus.delete_project("bulk-0003")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    lines = (h.dir / "projects.journal").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"newcomer": ["Newcomer", h.corpus.projects["newcomer"].serial], "bulk-0003": None}]
    every = sorted(h.corpus.projects)
    assert root_html_names(h) == every
    assert json.loads(h.web("simple/index.v1_json").read_text()) == expected_root_json(h)
    assert json.loads(_stdout(h))["projects"] == len(every)  # `status` reads the journal too


def _stdout(h: MirrorHarness) -> str:
    """``bandersnatch status --json`` through the real command (its document is on stdout)."""
    result = h.cli("status", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_a_journal_that_outgrows_an_eighth_of_the_records_is_folded_into_them(seeded: MirrorHarness) -> None:
    h = seeded
    # as earlier runs would have left it: the same records journaled again and again
    line = json.dumps({"bulk-0100": h.corpus.projects["bulk-0100"].serial}) + "\n"
    size = (h.dir / "projects.json").stat().st_size
    (h.dir / "projects.journal").write_text(line * (size // 8 // len(line)))
    h.corpus.touch("bulk-2000")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert not (h.dir / "projects.journal").exists()
    records = json.loads((h.dir / "projects.json").read_text())
    assert records == {c: p.serial if p.name == c else [p.name, p.serial] for c, p in h.corpus.projects.items()}


@pytest.mark.parametrize("data, fault", [
    (b'{"bulk-0001": 5}\n{"../x": 7}\n', "is not a journal of project records (line 2: '../x' is not a canonical project name)"),
    (b'{"bulk-0001": 5}\n\xff\n', "is not UTF-8 text (byte 0xff at offset 17)"),
])
def test_a_damaged_journal_is_named_once_and_the_records_rebuilt_from_the_pages(
    seeded: MirrorHarness, data: bytes, fault: str
) -> None:
    h = seeded
    (h.dir / "projects.journal").write_bytes(data)
    h.corpus.touch("small")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if "projects.journal" in line]
    assert len(named) == 1 and "WARNING" in named[0], result.stderr
    assert f"projects.journal {fault}" in named[0]
    assert "rebuilt it from the project pages" in named[0]
    assert not (h.dir / "projects.journal").exists()
    # the pages are what the mirror holds: the seeding wrote four
    assert sorted(json.loads((h.dir / "projects.json").read_text())) == ["bulk-0001", "bulk-2000", "small", "tiny-lib"]
    assert sorted(canonicalize_name(n) for n in root_html_names(h)) == ["bulk-0001", "bulk-2000", "small", "tiny-lib"]


@pytest.mark.parametrize("simple_format", ["ALL", "HTML"])
def test_a_new_name_found_after_recording_without_the_records_is_in_the_html_root(
    seeded: MirrorHarness, simple_format: str
) -> None:
    """A run that starts clean records projects without loading the records; a new name is
    found when its entry is not in the root JSON page (or, with no JSON page, by loading them)."""
    h = seeded
    h.configure({"simple-format": simple_format})
    h.corpus.add_file("Another_One", "1.0", "another_one-1.0.tar.gz", b"a" * 64)
    h.corpus.touch("bulk-0001")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert root_html_names(h) == sorted(h.corpus.projects)
    if simple_format == "ALL":
        assert json.loads(h.web("simple/index.v1_json").read_text()) == expected_root_json(h)
    lines = (h.dir / "projects.journal").read_text().splitlines()
    serial = h.corpus.projects["bulk-0001"].serial
    assert [json.loads(line) for line in lines] == [
        {"another-one": ["Another_One", h.corpus.projects["another-one"].serial], "bulk-0001": serial}
    ]


def test_a_renamed_project_is_renamed_in_both_root_pages(seeded: MirrorHarness) -> None:
    h = seeded
    base = (h.dir / "projects.json").read_bytes()
    h.corpus.projects["bulk-2000"].name = "Bulk.2000"  # the upstream now spells it so
    h.corpus.touch("Bulk.2000")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert (h.dir / "projects.json").read_bytes() == base
    assert '<a href="bulk-2000/">Bulk.2000</a>' in h.web("simple/index.html").read_text()
    assert json.loads(h.web("simple/index.v1_json").read_text()) == expected_root_json(h)
    lines = (h.dir / "projects.journal").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"bulk-2000": ["Bulk.2000", h.corpus.projects["bulk-2000"].serial]}]
