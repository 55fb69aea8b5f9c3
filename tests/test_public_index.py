"""The public index as met through a caching proxy (issue 13): sidecars that are advertised
but not served, pages that promise only what the mirror holds, failures that stay local."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from .conftest import MirrorHarness
from .test_serve import Running, _clean_env
from .upstream import make_wheel

METADATA_ATTRS = ("data-core-metadata", "data-dist-info-metadata")
JSON_METADATA_KEYS = ("core-metadata", "dist-info-metadata", "data-dist-info-metadata")


def add_wheel_project(h: MirrorHarness, name: str = "wheelie", version: str = "1.0") -> str:
    """A project with a real wheel (and its metadata) and an sdist; returns the wheel's filename."""
    wheel, data, meta = make_wheel(name, version)
    h.corpus.add_file(name, version, wheel, data, metadata=meta)
    h.corpus.add_file(name, version, f"{name}-{version}.tar.gz")
    return wheel


def html_entry(h: MirrorHarness, canonical: str, filename: str) -> str:
    page = h.web(f"simple/{canonical}/index.html").read_text()
    return next(line for line in page.splitlines() if f">{filename}</a>" in line)


def json_entry(h: MirrorHarness, canonical: str, filename: str) -> dict[str, Any]:
    return next(f for f in h.json_page(canonical)["files"] if f["filename"] == filename)


def stored_entry(h: MirrorHarness, canonical: str, filename: str) -> dict[str, Any]:
    doc = json.loads(h.web(f"json/{canonical}").read_text())
    return next(e for files in doc["releases"].values() for e in files if e["filename"] == filename)


def offers_metadata(h: MirrorHarness, canonical: str, filename: str) -> bool:
    """Whether any page kind offers core metadata for the file (and they agree)."""
    html = any(a in html_entry(h, canonical, filename) for a in METADATA_ATTRS)
    pep691 = any(json_entry(h, canonical, filename).get(k) for k in JSON_METADATA_KEYS)
    stored = any(stored_entry(h, canonical, filename).get(k) for k in JSON_METADATA_KEYS)
    assert html == pep691 == stored, (html, pep691, stored)
    return html


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING: " in line]


# -- 1. sidecars are optional ------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["404", "410", "digest"])
def test_a_sidecar_the_upstream_cannot_serve_does_not_fail_its_project(harness: MirrorHarness, fault: str) -> None:
    wheel = add_wheel_project(harness)
    if fault == "digest":
        harness.upstream.bad_sidecars.add(wheel)
    else:
        harness.upstream.unserved_sidecars[wheel] = int(fault)
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    found = warnings(result.stderr)
    assert len(found) == 1 and f"{wheel}.metadata" in found[0], found
    assert "Summary: 4 projects synced, 0 failed" in result.stderr
    wheel_path = harness.corpus.get("wheelie").releases["1.0"][0].path.lstrip("/")
    assert harness.web(wheel_path).is_file()
    assert not harness.web(f"{wheel_path}.metadata").exists()
    assert not offers_metadata(harness, "wheelie", wheel)
    assert offers_metadata(harness, "tiny-lib", "tiny_lib-2.0-py3-none-any.whl")  # others keep theirs
    assert "wheelie" in json.loads((harness.dir / "missing-metadata").read_text())["projects"]

    # A run soon after does not ask again: a cron run with nothing to do stays one request.
    harness.upstream.unserved_sidecars.clear()
    harness.upstream.bad_sidecars.clear()
    harness.upstream.clear()
    assert harness.main("mirror").returncode == 0
    assert harness.upstream.counts() == {"xmlrpc": 1}

    # A day later it asks for it alone and rewrites that project only.
    record = json.loads((harness.dir / "missing-metadata").read_text())
    record["checked"] -= 24 * 3600
    (harness.dir / "missing-metadata").write_text(json.dumps(record))
    harness.upstream.clear()
    again = harness.main("mirror")
    assert again.returncode == 0 and not warnings(again.stderr), again.stderr
    assert harness.upstream.counts() == {"xmlrpc": 1, "metadata": 1, "json": 1}
    assert offers_metadata(harness, "wheelie", wheel)
    assert harness.package_files() == harness.expected_files()
    assert not (harness.dir / "missing-metadata").exists()
    assert harness.main("verify").returncode == 0


def test_a_missing_sidecar_is_picked_up_on_the_projects_next_change(harness: MirrorHarness) -> None:
    wheel = add_wheel_project(harness)
    harness.upstream.unserved_sidecars[wheel] = 404
    assert harness.run().exit_code == 0
    harness.upstream.clear()
    harness.run()  # soon after: not asked again, one request in all
    assert harness.upstream.counts() == {"xmlrpc": 1}
    harness.upstream.unserved_sidecars.clear()
    (harness.dir / "missing-metadata").unlink()  # even without the record
    harness.corpus.add_file("wheelie", "1.1", "wheelie-1.1.tar.gz")
    assert harness.run().exit_code == 0
    assert offers_metadata(harness, "wheelie", wheel)


def test_a_sidecar_failing_for_another_reason_fails_its_project(harness: MirrorHarness) -> None:
    wheel = add_wheel_project(harness)
    harness.upstream.fault(re.escape(f"{wheel}.metadata"), "status", times=None, status=500)
    report = harness.run()
    assert list(report.failed) == ["wheelie"]


def test_pip_installs_a_project_whose_sidecar_is_missing(harness: MirrorHarness, tmp_path: Path) -> None:
    wheel = add_wheel_project(harness)
    harness.upstream.unserved_sidecars[wheel] = 404
    assert harness.main("mirror").returncode == 0
    assert_pip_installs(harness, tmp_path, "wheelie")


def assert_pip_installs(h: MirrorHarness, tmp_path: Path, name: str) -> None:
    running = Running(h.dir / "web")
    target = tmp_path / "site"
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
               "--no-input", "--only-binary", ":all:", "--index-url", running.index, "--target", str(target), name]
        result = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        running.stop()
    assert (target / name).is_dir()


# -- 2. pages promise only what the mirror holds, with the upstream's values -------------------------
def test_core_metadata_false_offers_no_metadata_in_any_page(harness: MirrorHarness, tmp_path: Path) -> None:
    add_wheel_project(harness)
    harness.configure({"core-metadata": "false"})
    assert harness.main("mirror").returncode == 0
    assert not list(harness.web("packages").rglob("*.metadata"))
    for page in harness.web("simple").rglob("index.*"):
        text = page.read_text()
        assert not any(a in text for a in (*METADATA_ATTRS, *JSON_METADATA_KEYS)), page
    for doc in harness.web("json").iterdir():
        entries = [e for files in json.loads(doc.read_text())["releases"].values() for e in files]
        assert not any(e.get(k) for e in entries for k in JSON_METADATA_KEYS), doc
    assert not (harness.dir / "missing-metadata").exists()
    assert harness.main("verify").returncode == 0
    assert_pip_installs(harness, tmp_path, "wheelie")


def test_pages_carry_the_upstreams_values(harness: MirrorHarness) -> None:
    harness.upstream.whole_second_times = True
    corpus = harness.corpus
    corpus.add_file("order", "2.0", "order-2.0.tar.gz", requires_python=">=3.9")
    corpus.add_file("order", "10.0", "order-10.0.tar.gz", yanked="do not use")
    corpus.add_file("order", "1.0", "order-1.0.tar.gz", upload_time=datetime(2020, 5, 6, 7, 8, 47, tzinfo=timezone.utc))
    assert harness.main("mirror").returncode == 0
    upstream = harness.upstream
    request = urllib.request.Request(f"{upstream.url}/simple/order/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request) as response:  # the upstream's own page
        theirs = json.loads(response.read())
    ours = harness.json_page("order")
    assert ours["versions"] == theirs["versions"] == ["1.0", "2.0", "10.0"]
    assert ours["meta"]["api-version"] == theirs["meta"]["api-version"]
    html = harness.web("simple/order/index.html").read_text()
    assert f'<meta name="pypi:repository-version" content="{ours["meta"]["api-version"]}">' in html
    by_name = {f["filename"]: f for f in theirs["files"]}
    assert by_name["order-1.0.tar.gz"]["upload-time"] == "2020-05-06T07:08:47Z"
    for entry in ours["files"]:
        want = by_name[entry["filename"]]
        for key in ("upload-time", "requires-python", "yanked", "size", "hashes"):
            assert entry.get(key) == want.get(key), (key, entry, want)


def test_upload_time_is_kept_as_the_upstream_wrote_it(harness: MirrorHarness) -> None:
    harness.corpus.add_file("whole", "1.0", "whole-1.0.tar.gz", upload_time=datetime(2020, 5, 6, 7, 8, 47, tzinfo=timezone.utc))
    harness.run()
    stored = stored_entry(harness, "whole", "whole-1.0.tar.gz")["upload_time_iso_8601"]
    assert json_entry(harness, "whole", "whole-1.0.tar.gz")["upload-time"] == stored


# -- 4. failures stay local ----------------------------------------------------------------------
#: (name, upstream switches, allowlist?)
METHODS = {
    "xmlrpc": dict(xmlrpc=True, json=True, root_json=True, allowlist=False),
    "simple": dict(xmlrpc=False, json=True, root_json=True, allowlist=False),
    "html": dict(xmlrpc=False, json=False, root_json=False, allowlist=False),
    "html-root": dict(xmlrpc=False, json=True, root_json=False, allowlist=False),
    "allowlist-xmlrpc": dict(xmlrpc=True, json=True, root_json=True, allowlist=True),
    "allowlist-simple": dict(xmlrpc=False, json=True, root_json=True, allowlist=True),
    "allowlist-html": dict(xmlrpc=False, json=False, root_json=False, allowlist=True),
}


BROKEN = r"/broken-1\.0\.tar\.gz$"


def run_after_a_failed_run(h: MirrorHarness, method: str) -> dict[str, int]:
    """Mirror 9 projects of which one keeps failing, change one upstream, run again; return
    the second run's requests by kind."""
    switches = METHODS[method]
    h.upstream.xmlrpc_enabled = switches["xmlrpc"]
    h.upstream.simple_json_enabled = switches["json"]
    h.upstream.root_json_enabled = switches["root_json"]
    for i in range(5):
        h.corpus.add_file(f"fine-{i}", "1.0", f"fine_{i}-1.0.tar.gz")
    h.corpus.add_file("broken", "1.0", "broken-1.0.tar.gz")
    h.upstream.fault(BROKEN, "status", times=None, status=404)
    if switches["allowlist"]:
        names = "\n".join(f"    {n}" for n in h.corpus.projects)
        h.configure(sections=f"[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n{names}\n")
    first = h.main("mirror")
    assert first.returncode == 1 and "broken: failed" in first.stderr, first.stderr
    assert not h.web("simple/broken").exists() and "broken" not in h.web("simple/index.html").read_text()
    h.corpus.add_file("fine-0", "1.1", "fine_0-1.1.tar.gz")  # one change upstream
    h.upstream.clear()
    h.upstream.fault(BROKEN, "status", times=None, status=404)
    second = h.main("mirror")
    assert second.returncode == 1, second.stderr
    assert "Summary: 1 project synced, 1 failed" in second.stderr, second.stderr
    return dict(h.upstream.counts())


@pytest.mark.parametrize("method", list(METHODS))
def test_the_run_after_a_failed_run_costs_the_failed_project_and_the_changes(harness: MirrorHarness, method: str) -> None:
    counts = run_after_a_failed_run(harness, method)
    print(f"\n{method}: {counts}")
    # the JSON documents of the failed project and of the changed one, nothing else
    assert counts.get("json") == 2, counts
    # the failed project's file and the changed project's new file
    assert counts.get("file") == 2, counts
    known = len(harness.corpus.projects) - 1  # all but the failed one
    if method in ("html", "html-root", "allowlist-html", "allowlist-simple"):
        # no serials in a listing (or no listing at all): one page request per known project,
        # plus the listing itself, plus the PEP 691 listing that answered HTML
        assert counts.get("simple", 0) <= known + 2, counts
    else:
        assert counts.get("simple", 0) <= 1, counts
    assert counts.get("xmlrpc", 0) <= 2, counts


# -- 3. verify works on every mirror this tool writes -------------------------------------------
MIRROR_KINDS = {
    "json": {"json": "true"},
    "json-relative-urls": {"json": "true"},
    "no-json": {"json": "false"},
    "no-json-relative-urls": {"json": "false"},
    "hash-index": {"json": "true", "hash-index": "true"},
    "keep-index-versions": {"json": "true", "keep_index_versions": "2"},
    "html-only-pages": {"json": "false", "simple-format": "HTML"},
    "core-metadata-off": {"json": "true", "core-metadata": "false"},
}


@pytest.mark.parametrize("kind", list(MIRROR_KINDS))
def test_verify_is_clean_on_every_kind_of_mirror(harness: MirrorHarness, kind: str) -> None:
    wheel = add_wheel_project(harness)
    harness.upstream.unserved_sidecars[wheel] = 404
    harness.upstream.relative_urls = "relative" in kind
    harness.configure(MIRROR_KINDS[kind])
    assert harness.main("mirror").returncode == 0
    harness.run()  # a second run (keep_index_versions: pages unchanged, no new version)
    result = harness.main("verify", "--delete")
    assert result.returncode == 0, result.stderr
    assert "Verify: clean" in result.stderr.splitlines()[-1], result.stderr
    sdist = next(harness.web("packages").rglob("small-0.2.tar.gz"))
    sdist.write_bytes(b"corrupt")
    repaired = harness.main("verify")
    assert "1 missing or corrupt files in 1 projects (1 fixed)" in repaired.stderr, repaired.stderr
    assert sdist.read_bytes() != b"corrupt"
    assert harness.main("verify", "--delete").returncode == 0


def test_verify_reports_as_fixed_only_what_a_recheck_confirms(harness: MirrorHarness) -> None:
    harness.run()
    lost = next(harness.web("packages").rglob("small-0.2.tar.gz"))
    lost.unlink()
    harness.upstream.fault(r"/small-0\.2\.tar\.gz$", "status", times=None, status=404)
    result = harness.main("verify")
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert "1 projects could not be fixed" in last and "(0 fixed)" in last, last
    dry = harness.main("verify", "--dry-run")
    assert "Would fetch" in dry.stderr and "small-0.2.tar.gz" in dry.stderr


def test_verify_picks_up_a_sidecar_the_upstream_serves_now(harness: MirrorHarness) -> None:
    wheel = add_wheel_project(harness)
    harness.upstream.unserved_sidecars[wheel] = 410
    harness.run()
    harness.upstream.unserved_sidecars.clear()
    assert harness.main("verify").returncode == 0
    assert offers_metadata(harness, "wheelie", wheel)
    assert harness.package_files() == harness.expected_files()


def test_verify_repairs_dependencies_the_allowlist_does_not_name(harness: MirrorHarness) -> None:
    wheel, data, meta = make_wheel("app", "1.0", requires=["helper"])
    harness.corpus.add_file("app", "1.0", wheel, data, metadata=meta)
    harness.corpus.add_file("helper", "1.0", "helper-1.0.tar.gz")
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = app\nresolve-dependencies = true\n")
    assert harness.main("mirror").returncode == 0
    helper = next(harness.web("packages").rglob("helper-1.0.tar.gz"))
    helper.unlink()
    result = harness.main("verify")
    assert "(1 fixed)" in result.stderr, result.stderr
    assert helper.is_file()


def test_verify_rewrites_outdated_pages_without_asking_the_upstream(harness: MirrorHarness) -> None:
    harness.run()
    page = harness.web("simple/small/index.html")
    good = page.read_text()
    page.write_text(good.replace('content="1.1"', 'content="1.0"'))  # as an older version wrote it
    harness.upstream.clear()
    result = harness.main("verify")
    assert "1 pages fixed" in result.stderr.splitlines()[-1], result.stderr
    assert page.read_text() == good
    assert harness.upstream.counts() == {}
    assert harness.main("verify").returncode == 0


def test_a_mirror_without_release_files_links_the_upstream_and_verifies(harness: MirrorHarness) -> None:
    harness.configure({"release-files": "false"})
    assert harness.main("mirror").returncode == 0
    assert not [p for p in harness.web("packages").rglob("*") if p.is_file() and not p.name.endswith(".metadata")]
    for canonical, spec in harness.corpus.projects.items():
        urls = [f["url"] for f in harness.json_page(canonical)["files"]]
        assert urls == [harness.upstream.url + f.path for files in spec.releases.values() for f in files]
        assert f'href="{harness.upstream.url}/packages/' in harness.web(f"simple/{canonical}/index.html").read_text()
    result = harness.main("verify", "--delete")
    assert result.returncode == 0 and "Verify: clean" in result.stderr.splitlines()[-1], result.stderr


def test_verify_goes_on_past_an_unreadable_project_and_then_deletes_nothing(harness: MirrorHarness) -> None:
    harness.run()
    harness.web("json/small").write_text("{not json")
    stray = harness.web("packages/zz/stray.tar.gz")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    result = harness.main("verify", "--delete")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "1 projects could not be fixed" in result.stderr.splitlines()[-1]
    assert stray.exists() and next(harness.web("packages").rglob("small-0.2.tar.gz")).exists()
    assert "tiny-lib" not in result.stderr  # the others were checked, and are fine
