"""What the upstream says is checked, never trusted into harm, through the command line.

- No downgrade: with ``allow-non-https`` off, a redirect from https to http is refused on
  every kind of request (a TLS test upstream with a self-signed certificate, trusted
  through ``REQUESTS_CA_BUNDLE``, redirecting to its plain-http twin).
- One bad upstream entry (a name no file system holds, a document over the size cap or
  nested too deeply) fails its project only; a listing that cannot be parsed makes the
  upstream unusable.
- A JSON API 404 is asked again by the normalized name, and without the upstream's word
  (listing, changelog) it is a failure, never a removal; 404 for everything is an unusable
  upstream.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .upstream import TestCertificate, UpstreamServer, standard_corpus

EXIT_OK, EXIT_FAILED, EXIT_UPSTREAM = 0, 1, 4


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(" ERROR: ", 1)[1] for line in result.stderr.splitlines() if " ERROR: " in line]


def _failed(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The run's closing lines for its failed projects (each is also logged as it fails)."""
    return [line for line in _errors(result) if line.startswith("Failed: ")]


def _records(h: MirrorHarness) -> dict[str, object]:
    return json.loads((h.dir / "projects.json").read_text())


# -- no downgrade ----------------------------------------------------------------------------
class TlsPair:
    """A TLS upstream and its plain-http twin over one corpus."""

    def __init__(self, tmp_path: Path) -> None:
        corpus = standard_corpus()
        self.tls = UpstreamServer(corpus, tls=TestCertificate.create(tmp_path))
        self.plain = UpstreamServer(corpus)

    def downgrade(self, pattern: str) -> None:
        self.tls.downgrade_to = (self.plain.url, pattern)


@pytest.fixture
def tls_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MirrorHarness, TlsPair]]:
    pair = TlsPair(tmp_path)
    with pair.tls, pair.plain:
        assert pair.tls.tls is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", pair.tls.tls.cert)
        h = MirrorHarness(tmp_path, pair.tls)
        h.configure({"allow-non-https": None})
        yield h, pair


def test_a_tls_upstream_is_mirrored_with_its_certificate_trusted(tls_harness: tuple[MirrorHarness, TlsPair]) -> None:
    h, pair = tls_harness
    assert h.upstream.url.startswith("https://")
    result = h.main("mirror")
    assert result.returncode == EXIT_OK, result.stderr
    assert h.package_files() == h.expected_files()
    assert not pair.plain.requests


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("JSON API document", r"^/pypi/small/json$"),
        ("release file", r"/small-0\.2\.tar\.gz$"),
        (".metadata sidecar", r"/tiny_lib-2\.0-py3-none-any\.whl\.metadata$"),
    ],
)
def test_a_redirect_from_https_to_http_fails_the_project_and_is_not_followed(
    tls_harness: tuple[MirrorHarness, TlsPair], what: str, pattern: str
) -> None:
    h, pair = tls_harness
    pair.downgrade(pattern)
    result = h.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    failed = _failed(result)
    assert len(failed) == 1, result.stderr
    project = "small" if "small" in pattern else "tiny-lib"
    assert failed[0].startswith(f"Failed: {project}: RedirectRefused: https://127.0.0.1:"), failed
    assert f"redirected to {pair.plain.url}/" in failed[0] and "not https; refused (allow-non-https = false)" in failed[0]
    assert not pair.plain.requests, f"the {what} was asked of the http twin"
    assert project not in _records(h) and len(_records(h)) == 2  # the others are mirrored


@pytest.mark.parametrize(("method", "pattern"), [("simple", r"^/simple/$"), ("xmlrpc", r"^/pypi$")])
def test_a_listing_redirected_to_http_is_an_unusable_upstream(
    tls_harness: tuple[MirrorHarness, TlsPair], method: str, pattern: str
) -> None:
    h, pair = tls_harness
    h.configure({"api-method": method})
    pair.downgrade(pattern)
    result = h.main("mirror")
    assert result.returncode == EXIT_UPSTREAM, result.stderr
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith("Upstream unusable: https://127.0.0.1:"), errors
    assert "not https; refused (allow-non-https = false)" in errors[0]
    assert not pair.plain.requests


def test_a_redirected_project_page_is_not_followed(tls_harness: tuple[MirrorHarness, TlsPair]) -> None:
    """The html method asks each known project's page for its serial: a downgrade there is
    refused, and the project is asked of the JSON API instead."""
    h, pair = tls_harness
    h.configure({"api-method": "html"})
    assert h.main("mirror").returncode == EXIT_OK
    pair.downgrade(r"^/simple/small/$")
    h.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    result = h.main("mirror")
    assert result.returncode == EXIT_OK, result.stderr
    assert not pair.plain.requests
    assert "small-0.4.tar.gz" in h.web("simple/small/index.html").read_text()


def test_allow_non_https_follows_the_downgrade(tls_harness: tuple[MirrorHarness, TlsPair]) -> None:
    h, pair = tls_harness
    h.configure({"allow-non-https": "true"})
    pair.downgrade(r"^/pypi/small/json$")
    result = h.main("mirror")
    assert result.returncode == EXIT_OK, result.stderr
    assert pair.plain.count("/pypi/small/json") == 1


# -- one upstream entry fails only its project ---------------------------------------------
LONG_NAME = "a" * 300


@pytest.mark.parametrize("method", ["simple", "xmlrpc"])
def test_a_project_name_too_long_for_a_file_system_fails_only_that_entry(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method})
    harness.corpus.add_file(LONG_NAME, "1.0", "long-1.0.tar.gz")
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    errors = _errors(result)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"Failed: {LONG_NAME}: refused: the upstream's entry 'aaaa")
    assert "is a project name of 300 bytes, longer than a file name can be" in errors[0]
    assert "Local I/O" not in result.stderr
    assert set(_records(harness)) == {"foo-bar-baz", "small", "tiny-lib"}


def test_a_file_name_too_long_for_a_file_system_fails_only_its_project(harness: MirrorHarness) -> None:
    harness.corpus.add_file("small", "0.9", "s" * 300 + ".tar.gz")
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    errors = _failed(result)
    assert len(errors) == 1, errors
    assert errors[0].startswith("Failed: small: UnusableEntry: the upstream's entry 'ssss")
    assert "is a file name of 307 bytes, longer than a file name can be" in errors[0]
    assert "Local I/O" not in result.stderr
    assert set(_records(harness)) == {"foo-bar-baz", "tiny-lib"}


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "streamed"])
def test_a_document_over_max_document_size_fails_only_its_project(harness: MirrorHarness, content_length: bool) -> None:
    harness.configure({"max-document-size": "64 KiB", "api-method": "simple"})
    harness.upstream.padded_documents["small"] = 4 << 20
    harness.upstream.send_content_length = content_length
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    errors = _failed(result)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"Failed: small: UnusableEntry: {harness.upstream.url}/pypi/small/json: the document is larger (")
    assert errors[0].endswith("more than max-document-size = 64 KiB)")
    assert ("4.0 MiB, " in errors[0]) is content_length
    assert set(_records(harness)) == {"foo-bar-baz", "tiny-lib"}


def test_the_default_size_cap_lets_ordinary_documents_through(harness: MirrorHarness) -> None:
    harness.upstream.padded_documents["small"] = 4 << 20
    result = harness.main("mirror")
    assert result.returncode == EXIT_OK, result.stderr


def test_a_bad_max_document_size_is_a_configuration_error(harness: MirrorHarness) -> None:
    harness.configure({"max-document-size": "huge"})
    result = harness.main("mirror")
    assert result.returncode == 2 and "max-document-size = 'huge'" in result.stderr
    assert not harness.dir.exists()


def test_a_document_nested_too_deeply_fails_only_its_project(harness: MirrorHarness) -> None:
    harness.upstream.nested_documents.add("small")
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    errors = _failed(result)
    assert len(errors) == 1, errors
    assert errors[0] == (
        f"Failed: small: UnusableEntry: {harness.upstream.url}/pypi/small/json: the document is nested too deeply to parse"
    )
    assert set(_records(harness)) == {"foo-bar-baz", "tiny-lib"}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"meta": {"_last-serial": 1}, "projects": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"\x00\xff garbage <a href='/simple/x/'>", "is not valid JSON"),
    ],
    ids=["nested", "garbage"],
)
@pytest.mark.parametrize("method", ["auto", "simple"])
def test_a_listing_that_cannot_be_parsed_is_an_unusable_upstream(
    harness: MirrorHarness, method: str, body: bytes, why: str
) -> None:
    harness.upstream.xmlrpc_enabled = False
    harness.upstream.listing_body = body
    harness.configure({"api-method": method})
    result = harness.main("mirror")
    assert result.returncode == EXIT_UPSTREAM, result.stderr
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith(f"Upstream unusable: {harness.upstream.url}/simple/: the listing ")
    assert why in errors[0] and "Traceback" not in result.stderr


# -- 404s --------------------------------------------------------------------------------------
def test_a_json_api_that_answers_only_normalized_names_is_asked_again(harness: MirrorHarness) -> None:
    """An upstream that is itself a mirror may answer only ``/pypi/<normalized>/json``."""
    harness.configure({"api-method": "simple"})
    harness.upstream.canonical_json_api_only = True
    result = harness.main("mirror")
    assert result.returncode == EXIT_OK, result.stderr
    assert set(_records(harness)) == {"foo-bar-baz", "small", "tiny-lib"}
    assert harness.package_files() == harness.expected_files()
    asked = [p for _m, p in harness.upstream.requests if p.startswith("/pypi/")]
    assert sorted(asked) == sorted(
        ["/pypi/Foo.Bar_Baz/json", "/pypi/foo-bar-baz/json", "/pypi/small/json", "/pypi/Tiny-Lib/json", "/pypi/tiny-lib/json"]
    )


@pytest.mark.parametrize("method", ["simple", "html"])
def test_a_listed_project_whose_json_api_answers_404_fails_named(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method})
    harness.upstream.fault(r"^/pypi/(Foo\.Bar_Baz|foo-bar-baz)/json$", "status", times=None, status=404)
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    assert _failed(result) == [
        "Failed: foo-bar-baz: the upstream lists it but its JSON API answers 404 (asked as Foo.Bar_Baz and foo-bar-baz)"
    ]
    assert set(_records(harness)) == {"small", "tiny-lib"}
    assert "foo-bar-baz" in (harness.dir / "todo").read_text()


@pytest.mark.parametrize("method", ["xmlrpc", "simple", "html"])
def test_a_held_project_whose_json_api_answers_404_is_kept(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method})
    assert harness.main("mirror").returncode == EXIT_OK
    harness.corpus.touch("small")
    harness.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=404)
    result = harness.main("mirror")
    assert result.returncode == EXIT_FAILED, result.stderr
    failed = _failed(result)
    assert len(failed) == 1 and failed[0].startswith("Failed: small: "), failed
    assert "JSON API answers 404 (asked as small)" in failed[0]
    assert "small" in _records(harness) and harness.web("simple/small/index.html").exists()
    assert "small" in harness.web("simple/index.html").read_text()
    assert "Summary: 0 projects synced, 1 failed, 0 removed" in result.stderr


# -- an upstream that knows none of the projects asked ------------------------------------------
ALLOWLIST = "[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n    smal\n    tiny-lb\n"


@pytest.mark.parametrize("method", ["auto", "simple", "html"])
def test_an_allowlist_the_upstream_knows_none_of_is_an_unusable_upstream(harness: MirrorHarness, method: str) -> None:
    harness.configure({"api-method": method}, ALLOWLIST)
    result = harness.main("mirror")
    assert result.returncode == EXIT_UPSTREAM, result.stderr
    lines = [line for line in result.stderr.splitlines() if " WARNING: " in line or " ERROR: " in line]
    assert lines == [lines[0]] and lines[0].endswith(
        "ERROR: Upstream unusable: the upstream's JSON API answers 404 for every project asked (2: smal, tiny-lb); "
        f"nothing was removed; check [mirror] master = {harness.upstream.url} and the allowlist's names"
    ), lines
    status = harness.main("status")
    assert status.returncode == 1 and "exited with 4" in status.stderr, status.stderr


def test_a_wrong_master_path_on_an_allowlist_mirror_is_an_unusable_upstream(harness: MirrorHarness) -> None:
    harness.configure({"master": harness.upstream.url + "/simpel"}, ALLOWLIST.replace("smal\n", "small\n"))
    result = harness.main("mirror")
    assert result.returncode == EXIT_UPSTREAM, result.stderr
    errors = _errors(result)
    assert len(errors) == 1 and "answers 404 for every project asked (2: small, tiny-lb)" in errors[0], errors
    assert harness.main("status").returncode == 1
