"""How the engine spends round trips: no avoidable request, work shared among workers."""

from __future__ import annotations

import multiprocessing

import pytest

from bandersnatch_classic.worker import SharedCursor as _SharedCursor

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream
from .upstream import bulk_corpus


def _json_requests(harness: MirrorHarness) -> list[str]:
    return [path for method, path in harness.upstream.requests if path.startswith("/pypi/") and path.endswith("/json")]


@pytest.mark.parametrize("method", ["xmlrpc", "simple", "html"])
def test_projects_are_asked_for_by_display_name(harness: MirrorHarness, method: str) -> None:
    """The public index redirects other spellings: asking by the listed name saves a round trip each."""
    harness.upstream.redirect_to_display_name = True
    harness.configure({"api-method": method})
    assert harness.run().exit_code == 0
    asked = _json_requests(harness)
    assert sorted(asked) == sorted(f"/pypi/{spec.name}/json" for spec in harness.corpus.projects.values())
    assert_mirror_equals_upstream(harness)

    # Later runs take the name from the project records.
    harness.corpus.add_file("Foo.Bar_Baz", "2.0", "Foo.Bar_Baz-2.0.tar.gz")
    harness.upstream.clear()
    assert harness.run(force_check=True).exit_code == 0
    assert "/pypi/foo-bar-baz/json" not in _json_requests(harness)
    assert "/pypi/Foo.Bar_Baz/json" in _json_requests(harness)
    assert_mirror_equals_upstream(harness)


def test_a_redirected_project_is_still_mirrored(harness: MirrorHarness) -> None:
    """``sync`` takes names as typed: the redirect is followed and the project mirrored."""
    harness.upstream.redirect_to_display_name = True
    report = harness.sync_projects("foo-bar-baz")
    assert report.exit_code == 0 and report.synced == 1
    assert _json_requests(harness) == ["/pypi/foo-bar-baz/json", "/pypi/Foo.Bar_Baz/json"]
    assert harness.web("simple/foo-bar-baz/index.html").exists()


def test_forked_workers_share_one_queue_of_projects(harness: MirrorHarness) -> None:
    """A run large enough to fork takes every project exactly once, whichever process asks."""
    bulk_corpus(120, releases=1, files=1, size=256, corpus=harness.corpus)
    harness.configure({"workers": "3"})
    report = harness.run()
    assert report.exit_code == 0
    asked = _json_requests(harness)
    assert len(asked) == len(set(asked)) == len(harness.corpus.projects)
    assert_mirror_equals_upstream(harness)


def _drain(cursor: _SharedCursor, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    for item in cursor:
        out.put(item[0])
    out.put(None)


def test_the_shared_cursor_hands_each_item_to_one_process() -> None:
    context = multiprocessing.get_context("fork")
    items = [(f"p{i}", i, f"P{i}") for i in range(500)]
    cursor = _SharedCursor(items, context)
    out = context.Queue()
    processes = [context.Process(target=_drain, args=(cursor, out)) for _ in range(3)]
    for process in processes:
        process.start()
    taken: list[str] = []
    done = 0
    while done < len(processes):
        item = out.get(timeout=30)
        if item is None:
            done += 1
        else:
            taken.append(item)
    for process in processes:
        process.join()
    assert sorted(taken) == sorted(name for name, _s, _d in items)
