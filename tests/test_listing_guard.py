"""A bad listing never empties the mirror: empty and truncated listings for each method, through the CLI."""

from __future__ import annotations

import json

import pytest

from .conftest import MirrorHarness

METHODS = ["xmlrpc", "simple", "html"]


def _snapshot(h: MirrorHarness) -> dict[str, object]:
    """What a refused run must leave exactly as it was."""
    return {
        "records": (h.dir / "projects.json").read_text(),
        "status": (h.dir / "status").read_text(),
        "pages": sorted(p.name for p in h.web("simple").iterdir() if p.is_dir()),
        "root": h.web("simple/index.html").read_text(),
        "todo": (h.dir / "todo").exists(),
    }


def _mirrored(h: MirrorHarness, method: str) -> MirrorHarness:
    h.configure({"api-method": method})
    assert h.main("mirror").returncode == 0
    return h


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("limit", [0, 1], ids=["empty", "truncated"])
def test_a_listing_that_would_remove_too_much_removes_nothing_and_exits_4(
    harness: MirrorHarness, method: str, limit: int
) -> None:
    h = _mirrored(harness, method)
    before = _snapshot(h)
    h.upstream.listing_limit = limit
    # xmlrpc reads the full listing only on full runs; the others on every run
    result = h.main("mirror", "--force-check") if method == "xmlrpc" else h.main("mirror")
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "refusing the upstream's listing" in errors[0] and f"via {method}" in errors[0]
    assert "--allow-mass-removal" in errors[0]
    assert ("lists none" in errors[0]) if limit == 0 else ("max-removals = 1%" in errors[0])
    assert _snapshot(h) == before
    assert "Summary:" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("method", METHODS)
def test_allow_mass_removal_accepts_the_listing_for_one_run(harness: MirrorHarness, method: str) -> None:
    h = _mirrored(harness, method)
    h.upstream.listing_limit = 1
    args = ["--force-check"] if method == "xmlrpc" else []
    result = h.main("mirror", "--allow-mass-removal", *args)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((h.dir / "projects.json").read_text())) == 1
    assert "Summary: " in result.stderr and "2 removed" in result.stderr
    # the flag is for one run: the next bad listing is refused again
    h.upstream.listing_limit = 0
    assert h.main("mirror", *args).returncode == 4


@pytest.mark.parametrize("method", ["simple", "html"])
def test_a_deletion_within_max_removals_goes_through(harness: MirrorHarness, method: str) -> None:
    h = _mirrored(harness, method)
    h.configure({"max-removals": "1"})
    h.corpus.delete_project("small")
    result = h.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "small" not in json.loads((h.dir / "projects.json").read_text())
    assert not h.web("simple/small").exists()


def test_a_percentage_limit_counts_the_mirror_s_projects(harness: MirrorHarness) -> None:
    """3 projects at 50%: one removal is allowed, two are not."""
    h = _mirrored(harness, "simple")
    h.configure({"max-removals": "50%"})
    h.upstream.listing_limit = 1
    assert h.main("mirror").returncode == 4
    h.upstream.listing_limit = 2
    assert h.main("mirror").returncode == 0
    assert len(json.loads((h.dir / "projects.json").read_text())) == 2


def test_a_bad_max_removals_is_a_configuration_error(harness: MirrorHarness) -> None:
    harness.configure({"max-removals": "lots"})
    result = harness.main("mirror")
    assert result.returncode == 2 and "max-removals" in result.stderr and "'lots'" in result.stderr
    assert not harness.dir.exists()


@pytest.mark.parametrize("method", METHODS)
def test_an_allowlist_mirror_never_reads_a_listing(harness: MirrorHarness, method: str) -> None:
    """Allowlist mirrors ask for their projects by name: an empty listing changes nothing."""
    h = harness
    h.configure({"api-method": method}, "[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    small\n    tiny-lib\n")
    assert h.main("mirror").returncode == 0
    h.upstream.listing_limit = 0
    h.corpus.touch("small")
    result = h.main("mirror", "--force-check")
    assert result.returncode == 0, result.stderr
    assert set(json.loads((h.dir / "projects.json").read_text())) == {"small", "tiny-lib"}


@pytest.mark.parametrize("method", ["xmlrpc", "simple"])
def test_an_upstream_answering_404_for_everything_is_unusable_and_removes_nothing(harness: MirrorHarness, method: str) -> None:
    """A proxy that does not forward the JSON API must not empty the mirror: a 404 alone is
    no removal, and 404 for every project asked is an unusable upstream."""
    h = _mirrored(harness, method)
    h.configure({"workers": "1"})
    h.upstream.fault(r"^/pypi/[^/]+/json$", "status", times=None, status=404)
    for name in ("Foo.Bar_Baz", "small", "Tiny-Lib"):
        h.corpus.touch(name)
    result = h.main("mirror")
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "Upstream unusable: " in errors[0], errors
    assert "answers 404 for every project asked (3: foo-bar-baz, small, tiny-lib)" in errors[0]
    records = json.loads((h.dir / "projects.json").read_text())
    assert len(records) == 3
    todo = (h.dir / "todo").read_text().split()
    assert set(records) <= set(todo)
    assert all(h.web(f"simple/{name}/index.html").exists() for name in records)
    # the upstream is fixed: the projects are synced
    h.upstream.clear()
    assert h.main("mirror").returncode == 0
    assert len(json.loads((h.dir / "projects.json").read_text())) == 3
    assert not (h.dir / "todo").exists()
