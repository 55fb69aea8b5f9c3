"""What a run with nothing to do costs (issue 22): the root listing and the project pages are
asked conditionally with the validators of the last answer, and an unchanged one costs a 304
and no body. Measured against the test upstream, with its validators on and off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .test_closures import configure
from .upstream import UpstreamServer, bulk_corpus, closure_corpus

#: A 304 is a status line and a few headers (ETag, Last-Modified, the serial): well under this.
MAX_304_BYTES = 300


@pytest.fixture
def allowlisted(tmp_path: Path) -> Iterator[MirrorHarness]:
    with UpstreamServer(closure_corpus()) as server:
        h = MirrorHarness(tmp_path, server)
        configure(h, ["app", "tool"])
        yield h


def noop(h: MirrorHarness) -> tuple[int, int]:
    """Requests and bytes of one more run, which must have nothing to do."""
    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0 and ": synced at serial" not in result.stderr, result.stderr
    return len(h.upstream.requests), h.upstream.sent_bytes


@pytest.mark.parametrize("method", ["simple", "html"])
def test_a_noop_run_of_an_allowlist_mirror_costs_a_304_per_project(allowlisted: MirrorHarness, method: str) -> None:
    h = allowlisted
    h.configure({"api-method": method})
    assert h.main("mirror").returncode == 0
    projects = json.loads((h.dir / "projects.json").read_text())
    assert len(projects) == 5  # app, tool and their closure
    requests, sent = noop(h)  # the first asks unconditionally: it has no validators yet
    assert requests == len(projects) and sent > MAX_304_BYTES * requests
    requests, sent = noop(h)
    assert h.upstream.requests == [("GET", f"/simple/{name}/") for name in sorted(projects)]
    assert sent <= MAX_304_BYTES * requests, sent
    # a page that changed is answered whole, and its project synced
    h.corpus.touch("leaf")
    h.upstream.clear()
    result = h.main("mirror")
    assert result.returncode == 0 and "leaf: synced" in result.stderr, result.stderr
    assert noop(h)[1] <= MAX_304_BYTES * len(projects)


def test_without_validators_from_the_upstream_every_page_costs_its_body(allowlisted: MirrorHarness) -> None:
    h = allowlisted
    h.upstream.page_validators = False
    h.configure({"api-method": "simple"})
    assert h.main("mirror").returncode == 0
    noop(h)
    requests, sent = noop(h)
    assert requests == 5 and sent > 5 * MAX_304_BYTES


@pytest.mark.parametrize("method, requests", [("simple", 1), ("html", 41)])
def test_a_noop_run_of_a_whole_index_mirror_costs_304s(tmp_path: Path, method: str, requests: int) -> None:
    with UpstreamServer(bulk_corpus(40)) as server:
        h = MirrorHarness(tmp_path, server)
        h.configure({"api-method": method})
        assert h.main("mirror").returncode == 0
        noop(h)
        asked, sent = noop(h)
        assert asked == requests and sent <= MAX_304_BYTES * requests, sent
        server.corpus.touch("bulk-0003")  # changed: the listing is read whole again
        server.clear()
        result = h.main("mirror")
        assert result.returncode == 0 and "bulk-0003: synced" in result.stderr, result.stderr
