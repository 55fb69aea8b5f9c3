"""Damaged state files are checked, never trusted into loss (docs/operations.md, "Damaged state").

Each test builds a real mirror from the test upstream, damages a state file by hand, and
runs ``status`` and ``mirror`` through the command line: no traceback, the damage named in
one line, the exit status documented for it, and nothing mirrored lost.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream
from .upstream import UpstreamServer, bulk_corpus

COMPARED = "the serial of every project the upstream lists is compared with the mirror's records"
NOT_BELIEVED = f"not believed: the serial is set to 0 and {COMPARED}"
#: What ``status`` says the next run does about a serial it cannot believe.
NEXT_COMPARES = "the next mirror run compares the serial of every project the upstream lists with the mirror's records"


@pytest.fixture
def mirrored(harness: MirrorHarness) -> MirrorHarness:
    """A mirror of 13 projects, in sync with the upstream (which then changes once)."""
    bulk_corpus(10, releases=1, files=1, size=256, corpus=harness.corpus)
    harness.configure({"api-method": "auto"})
    assert harness.main("mirror").returncode == 0
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    return harness


def root_names(h: MirrorHarness) -> tuple[list[str], list[str]]:
    """The projects the root index lists: (HTML hrefs, JSON names canonicalized)."""
    html = re.findall(r'<a href="([^"]+)/">', h.web("simple/index.html").read_text())
    doc = json.loads(h.web("simple/index.v1_json").read_text())
    return html, sorted(canonicalize_name(p["name"]) for p in doc["projects"])


def assert_everything_listed(h: MirrorHarness) -> None:
    every = sorted(h.corpus.projects)
    assert root_names(h) == (every, every)
    assert_mirror_equals_upstream(h)


def status_line(h: MirrorHarness) -> tuple[int, str]:
    """``bandersnatch status``: its exit status and its one stderr line."""
    result = h.main("status")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 1, result.stderr
    return result.returncode, result.stderr


# (file, damaged bytes, the line `mirror` prints, what `status` says the next run does)
DAMAGE = [
    ("status", b"\xff\xfe1\x00", "status is not UTF-8 text (byte 0xff at offset 0); " + NOT_BELIEVED, NEXT_COMPARES),
    ("status", b"-12\n", "status holds '-12', not a serial; " + NOT_BELIEVED, NEXT_COMPARES),
    ("status", b"", "status is empty; " + NOT_BELIEVED, NEXT_COMPARES),
    ("status", b"99999999999999999999", "status holds '99999999999999999999', beyond any index's serial; " + NOT_BELIEVED,
     NEXT_COMPARES),
    ("generation", b"\x80", "generation is not UTF-8 text (byte 0x80 at offset 0); checking every project (a full "
     "check), then writing generation 5", "a full check"),
    ("generation", b"five", "generation holds 'five', not a generation; checking every project", "a full check"),
    ("todo", b"108\nsmall 10\xff7\n", "todo is not UTF-8 text (byte 0xff at offset 12); discarded it; " + COMPARED
     + ", which finds what it held", "discards it and compares"),
    ("todo", b"108\nsmall 104\nbulk-00", "todo line 3 holds 'bulk-00', not '<project> <serial>'; discarded it",
     "discards it"),
    ("todo", b"-1\n", "todo line 1 holds '-1', not a serial; discarded it", "discards it"),
    ("projects.json", b'{"small": 10\xff', "projects.json is not UTF-8 text (byte 0xff at offset 12); rebuilt it from "
     "the project pages: 13 projects", "rebuilds it from the project pages"),
    ("projects.json", b'{"small": -4}', "projects.json is not a set of project records (bad record 'small': -4); "
     "rebuilt it from the project pages: 13 projects", "rebuilds it"),
    ("projects.json", b'{"small": 10', "projects.json is not a set of project records (Expecting ',' delimiter",
     "rebuilds it"),
    ("projects.json", b'{"small": 104, "../../etc": 1}', "projects.json is not a set of project records ('../../etc' "
     "is not a canonical project name); rebuilt it from the project pages: 13 projects", "rebuilds it"),
    ("run-history.json", b'{"runs": [\xc3', "run-history.json is not UTF-8 text (byte 0xc3 at offset 10); starting a "
     "new history", "starts a new history"),
    ("run-history.json", b'{"runs": [{"started": "yesterday"}]}', "run-history.json is not a run history (run 1: "
     "'started' is 'yesterday'); starting a new history", "starts a new history"),
    ("run-history.json", b'{"runs": [{"started": 1e300}]}', "run-history.json is not a run history (run 1: 'started' "
     "is 1e+300, not a time); starting a new history", "starts a new history"),
    ("upstream-method", b"xmlrpc \xff", "upstream-method is not UTF-8 text (byte 0xff at offset 7); ignored it; the "
     "upstream's methods are probed again", "probes the upstream's methods again"),
    ("upstream-method", b"carrier-pigeon 1 x", "upstream-method holds 'carrier-pigeon 1 x', not '<method> <time> "
     "<master>'; ignored it", "probes the upstream's methods again"),
    ("missing-metadata", b'{"checked": 1, "projects": {"small": [["a", \xff', "missing-metadata is not UTF-8 text "
     "(byte 0xff at offset 44); removed it: the pages offer only the .metadata files the mirror holds", "removes it"),
    ("missing-metadata", b'{"checked": "soon", "projects": {}}', "missing-metadata is not a record of missing "
     ".metadata files (could not convert string to float: 'soon')", "removes it"),
    ("missing-metadata", b'{"checked": 1, "projects": {"small": [["status", "http://127.0.0.1:9/x.metadata", "'
     + b"0" * 64 + b'"]]}}', "missing-metadata is not a record of missing .metadata files ('small': 'status' is not "
     "a .metadata file below web/packages); removed it", "removes it"),
]


@pytest.mark.parametrize(
    "name, data, line, repair", DAMAGE, ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGE)]
)
def test_a_damaged_state_file_is_named_in_one_line_and_repaired(
    mirrored: MirrorHarness, name: str, data: bytes, line: str, repair: str
) -> None:
    h = mirrored
    (h.dir / name).write_bytes(data)

    code, said = status_line(h)
    assert code == 1 and said.startswith("") and f"{h.dir / name} " in said and repair in said, said

    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    if COMPARED in line:  # one listing compared with the records, not a request for every project
        assert h.upstream.count("/pypi/small/json") == 1 and h.upstream.count("/pypi/bulk-") == 0
    named = [text for text in result.stderr.splitlines() if str(h.dir / name) in text]
    assert len(named) == 1 and line in named[0], result.stderr
    assert "WARNING" in named[0]
    assert_everything_listed(h)  # the upstream's change is in, nothing mirrored was lost
    assert int((h.dir / "status").read_text()) == h.corpus.serial and not (h.dir / "todo").exists()

    again = h.main("mirror")
    assert again.returncode == 0 and str(h.dir / name) not in again.stderr, again.stderr  # repaired: said once
    assert status_line(h) == (0, "")


def test_records_that_lost_projects_are_restored_from_the_pages_before_the_root_index_is_written(
    mirrored: MirrorHarness,
) -> None:
    h = mirrored
    every = sorted(h.corpus.projects)
    for kept in ({}, {"bulk-0003": 101, "small": 102}):
        (h.dir / "projects.json").write_text(json.dumps(kept))
        code, said = status_line(h)
        assert code == 1, said
        assert f"projects.json lists {len(kept)} projects but the root index lists {len(every)}: records were lost; " \
            "the next mirror run restores them from the project pages" in said

        h.corpus.touch("tiny-lib")  # one upstream change
        result = h.main("mirror")
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("records were lost") == 1, result.stderr
        assert f"projects.json lists {len(kept)} projects but the root index lists {len(every)}: records were lost; " \
            f"restored {len(every) - len(kept)} from the project pages" in result.stderr
        assert_everything_listed(h)
        assert sorted(json.loads((h.dir / "projects.json").read_text())) == every
        assert status_line(h) == (0, "")

    # A removal on the upstream's word still shrinks the root index, and is not taken for a loss.
    h.corpus.delete_project("bulk-0005")
    result = h.main("mirror")
    assert result.returncode == 0 and "records were lost" not in result.stderr, result.stderr
    every.remove("bulk-0005")
    assert root_names(h) == (every, every) == (sorted(h.corpus.projects),) * 2


def test_a_record_set_is_checked_against_the_json_root_when_no_html_is_written(mirrored: MirrorHarness) -> None:
    h = mirrored
    h.configure({"simple-format": "JSON"})
    assert h.main("mirror").returncode == 0
    h.web("simple/index.html").unlink()
    (h.dir / "projects.json").write_text("{}")
    h.corpus.touch("tiny-lib")
    result = h.main("mirror")
    assert result.returncode == 0 and "projects.json lists 0 projects but the root index lists 13" in result.stderr
    doc = json.loads(h.web("simple/index.v1_json").read_text())
    assert sorted(canonicalize_name(p["name"]) for p in doc["projects"]) == sorted(h.corpus.projects)
    assert not h.web("simple/index.html").exists()


@pytest.mark.parametrize("method", ["xmlrpc", "simple"])
def test_a_serial_ahead_of_the_upstream_is_not_believed(mirrored: MirrorHarness, method: str) -> None:
    h = mirrored
    h.configure({"api-method": method})
    ahead = h.corpus.serial + 1000
    (h.dir / "status").write_text(str(ahead))
    code, said = status_line(h)
    assert code == 1 and "UNHEALTHY" not in said  # the one stderr line, not the report
    assert f"status holds serial {ahead}, ahead of the upstream's serial {h.corpus.serial}; not believed: " \
        f"{NEXT_COMPARES}" in said

    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    line = f"status holds serial {ahead}, ahead of the upstream's serial {h.corpus.serial}; {NOT_BELIEVED}"
    assert result.stderr.count(line) == 1 and result.stderr.count("ahead of") == 1, result.stderr
    assert_everything_listed(h)  # small 0.4, added after the good serial, is mirrored
    # One listing compared with the records: only the project that changed is asked for.
    assert [p for _, p in h.upstream.requests if p.startswith("/pypi/")] in (
        ["/pypi", "/pypi", "/pypi", "/pypi/small/json"], ["/pypi/small/json"])
    assert int((h.dir / "status").read_text()) == h.corpus.serial
    assert status_line(h) == (0, "")


def test_a_todo_aiming_past_the_upstream_is_not_believed_and_its_projects_are_synced(mirrored: MirrorHarness) -> None:
    h = mirrored
    status = int((h.dir / "status").read_text())
    (h.dir / "todo").write_text(f"{h.corpus.serial + 50}\nbulk-0002 0\n")
    code, said = status_line(h)
    assert code == 1 and f"todo aims at serial {h.corpus.serial + 50}, ahead of the upstream's serial " \
        f"{h.corpus.serial}; not believed" in said

    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(
        f"todo aims at serial {h.corpus.serial + 50}, ahead of the upstream's serial {h.corpus.serial}; not believed: "
        f"its 1 projects are synced and the changes after the status serial {status} are asked for"
    ) == 1, result.stderr
    assert h.upstream.count("/pypi/bulk-0002/json") == 1 and h.upstream.count("/pypi/small/json") == 1
    assert_everything_listed(h)
    assert int((h.dir / "status").read_text()) == h.corpus.serial and not (h.dir / "todo").exists()


@pytest.mark.parametrize("command", [["sync", "small"], ["verify"], ["delete", "small"]])
def test_commands_that_do_not_repair_stop_on_a_damaged_serial_with_the_fix(mirrored: MirrorHarness, command: list[str]) -> None:
    h = mirrored
    (h.dir / "status").write_bytes(b"\xff")
    before = root_names(h)
    result = h.main(*command)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"Mirror state error: {h.dir / 'status'} is not UTF-8 text (byte 0xff at offset 0); run `bandersnatch " \
        "mirror`, which repairs it" in result.stderr
    assert root_names(h) == before and h.web("simple/small/index.html").exists()


def test_a_damaged_verify_progress_restarts_the_verify(mirrored: MirrorHarness) -> None:
    h = mirrored
    (h.dir / "verify-progress").write_bytes(b"small\n\xfe")
    result = h.main("verify")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count(f"{h.dir / 'verify-progress'} is not UTF-8 text (byte 0xfe at offset 6); checking "
                               "every project from the beginning") == 1
    assert "13 projects" in result.stderr and not (h.dir / "verify-progress").exists()


def test_status_with_every_file_damaged_names_each_and_never_crashes(mirrored: MirrorHarness, tmp_path: Path) -> None:
    h = mirrored
    for name, data, _, _ in DAMAGE:
        if name != "status":
            (h.dir / name).write_bytes(data)
    (h.dir / "status").write_bytes(b"\xff")
    result = h.cli("status", "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    doc = json.loads(result.stdout)
    assert doc["serial"] is None and doc["lag_serials"] is None and doc["healthy"] is False
    for name in ("status", "todo", "generation", "projects.json", "run-history.json", "missing-metadata",
                 "upstream-method"):
        assert sum(p.startswith(f"{h.dir / name} ") for p in doc["problems"]) == 1, (name, doc["problems"])
    human = h.cli("status")
    assert human.returncode == 1 and re.search(r"^serial +unreadable \(see health\)$", human.stdout, re.M), human.stdout


def test_damaged_state_in_a_bucket_is_named_and_repaired_the_same_way(tmp_path: Path, upstream: UpstreamServer) -> None:
    test_s3 = pytest.importorskip("tests.test_s3")  # skipped, as that module is, without boto3 and moto
    server = test_s3.moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        bucket = test_s3.Bucket(f"http://{host}:{port}")
        h = test_s3.s3_harness(tmp_path / "s3", upstream, bucket)
        assert h.main("mirror").returncode == 0
        bucket.put("status", b"\xff")
        bucket.put("projects.json", b"{}")
        h.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
        said = h.main("status")
        assert said.returncode == 1 and "status is not UTF-8 text (byte 0xff at offset 0)" in said.stderr
        assert "projects.json lists 0 projects but the root index lists 3: records were lost" in said.stderr
        result = h.main("mirror")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count(f"status is not UTF-8 text (byte 0xff at offset 0); {NOT_BELIEVED}") == 1
        assert result.stderr.count("records were lost; restored 3 from the project pages") == 1
        doc = json.loads(bucket.get("web/simple/index.v1_json"))
        assert sorted(canonicalize_name(p["name"]) for p in doc["projects"]) == sorted(h.corpus.projects)
        assert int(bucket.get("status")) == h.corpus.serial
    finally:
        server.stop()


def test_an_ordinary_run_does_not_scan_the_pages(mirrored: MirrorHarness) -> None:
    """The records are checked against the root index's count, not against a walk of web/simple:
    a page no record and no root entry names (planted here) is found only once records are lost."""
    h = mirrored
    planted = h.web("simple/planted/index.html")
    planted.parent.mkdir()
    planted.write_text("<html><title>Links for planted</title></html>\n<!--SERIAL 7-->")
    h.corpus.touch("tiny-lib")
    result = h.main("mirror")
    assert result.returncode == 0 and "planted" not in result.stderr and "records" not in result.stderr
    assert "planted" not in root_names(h)[0]

    (h.dir / "projects.json").write_text("{}")  # now the pages are read, all of them
    h.corpus.touch("tiny-lib")
    result = h.main("mirror")
    assert "records were lost; restored 14 from the project pages" in result.stderr, result.stderr
    assert "planted" in root_names(h)[0]
