"""Every kind of upstream: XML-RPC, PEP 691 listing, HTML-only listing, no serial header."""

from __future__ import annotations

import pytest

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream

#: (xmlrpc_enabled, simple_json_enabled) -> the method auto must end up using
UPSTREAMS = {
    "everything": (True, True, "xmlrpc"),
    "no-xmlrpc": (False, True, "simple"),
    "html-only": (False, False, "html"),
}


@pytest.mark.parametrize("serial_header", [True, False], ids=["header", "no-header"])
@pytest.mark.parametrize("kind", sorted(UPSTREAMS))
def test_auto_finds_a_method_first_and_incremental_runs(harness: MirrorHarness, kind: str, serial_header: bool) -> None:
    xmlrpc, simple_json, expected = UPSTREAMS[kind]
    up = harness.upstream
    up.xmlrpc_enabled, up.simple_json_enabled, up.serial_header = xmlrpc, simple_json, serial_header
    report = harness.run()
    assert report.exit_code == 0 and report.method == expected
    assert_mirror_equals_upstream(harness)
    assert int((harness.dir / "status").read_text()) == harness.corpus.serial

    # nothing changed: nothing fetched but the discovery requests
    up.clear()
    report = harness.run()
    assert report.exit_code == 0 and report.synced == 0
    assert up.counts()["json"] == 0 and up.counts()["file"] == 0

    # a change: only that project is fetched
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("newcomer", "1.0", "newcomer-1.0.tar.gz")
    up.clear()
    report = harness.run()
    assert report.exit_code == 0 and report.synced == 2, report
    assert up.counts()["json"] == 2 and up.counts()["file"] == 2
    assert_mirror_equals_upstream(harness)


@pytest.mark.parametrize("method", ["xmlrpc", "simple", "html"])
def test_explicit_methods(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method})
    report = harness.run()
    assert report.exit_code == 0 and report.method == method
    assert_mirror_equals_upstream(harness)


def test_an_explicit_method_the_upstream_lacks_fails_clearly(harness: MirrorHarness) -> None:
    harness.upstream.xmlrpc_enabled = False
    harness.configure({"api-method": "xmlrpc"})
    result = harness.main("mirror")
    assert result.returncode == 4 and "405" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("serial_header", [True, False], ids=["header", "no-header"])
def test_html_method_rechecks_only_changed_projects(harness: MirrorHarness, serial_header: bool) -> None:
    harness.upstream.xmlrpc_enabled = harness.upstream.simple_json_enabled = False
    harness.upstream.serial_header = serial_header
    harness.configure({"api-method": "html"})
    harness.run()
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.upstream.clear()
    harness.run()
    counts = harness.upstream.counts()
    # the listing, one serial check per known project, one JSON document for the change
    assert counts["simple"] == 1 + len(harness.corpus.projects) and counts["json"] == 1


@pytest.mark.parametrize("kind", sorted(UPSTREAMS))
def test_allowlist_mirrors_never_fetch_the_listing(harness: MirrorHarness, kind: str) -> None:
    xmlrpc, simple_json, _ = UPSTREAMS[kind]
    up = harness.upstream
    up.xmlrpc_enabled, up.simple_json_enabled = xmlrpc, simple_json
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    small\n    tiny_lib\n")
    assert harness.run().exit_code == 0
    assert ("GET", "/simple/") not in up.requests and ("GET", "/simple") not in up.requests
    assert "list_packages_with_serial" not in up.xmlrpc_calls
    assert sorted(d.name for d in harness.web("simple").iterdir() if d.is_dir()) == ["small", "tiny-lib"]
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    harness.corpus.add_file("Foo.Bar_Baz", "9.0", "foo-9.0.tar.gz")
    up.clear()
    assert harness.run().exit_code == 0
    assert "small-0.4.tar.gz" in harness.web("simple/small/index.html").read_text()
    assert ("GET", "/simple/") not in up.requests
    assert not harness.web("simple/foo-bar-baz").exists()


def test_relative_file_urls_in_the_json_api_are_resolved(harness: MirrorHarness) -> None:
    harness.upstream.relative_urls = True
    report = harness.run()
    assert report.exit_code == 0, report.failed
    assert_mirror_equals_upstream(harness)


def test_a_corrupt_xmlrpc_answer_makes_auto_fall_back(harness: MirrorHarness) -> None:
    """An XML-RPC answer that does not parse is the upstream's: the method is unavailable."""
    harness.upstream.fault("POST /pypi", "corrupt", times=None)
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Upstream method: simple (xmlrpc unavailable" in result.stderr
    assert_mirror_equals_upstream(harness)


def test_a_bug_in_the_xmlrpc_parse_exits_70_without_falling_back(
    harness: MirrorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception the parse does not expect is a bug: not "xmlrpc unavailable", no other method."""
    from bandersnatch_classic import xmlrpc_api

    def broken(body: bytes) -> object:
        raise RuntimeError("injected bug in the XML-RPC parse")

    monkeypatch.setattr(xmlrpc_api, "parse_response", broken)
    result = harness.main("mirror")
    assert result.returncode == 70, result.stderr
    assert "Internal error" in result.stderr and "RuntimeError: injected bug in the XML-RPC parse" in result.stderr
    assert "unavailable" not in result.stderr and "Upstream method" not in result.stderr
    assert [p for _m, p in harness.upstream.requests if not p.startswith("/pypi")] == []
    assert not (harness.dir / "upstream-method").exists()
