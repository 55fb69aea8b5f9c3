"""A full mirror run against the test upstream, checked file by file and byte for byte."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from bandersnatch_classic import cli, config as configuration

from .conftest import MirrorHarness
from .upstream import ProjectSpec, UpstreamServer, make_wheel

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL): ")


def expected_html(spec: ProjectSpec) -> str:
    """The project page as docs/design.md, Pages, spells it, built from the corpus alone."""
    links = ""
    for files in spec.releases.values():
        for f in files:
            attrs = f' data-requires-python="{html.escape(f.requires_python)}"' if f.requires_python else ""
            if f.metadata:
                digest = hashlib.sha256(f.metadata).hexdigest()
                attrs += f' data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}"'
            if f.yanked:
                attrs += f' data-yanked="{html.escape(f.yanked) if isinstance(f.yanked, str) else ""}"'
            links += f'    <a href="../..{f.path}#sha256={f.sha256}"{attrs}>{f.filename}</a><br/>\n'
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Links for {spec.name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {spec.name}</h1>\n{links}  </body>\n</html>\n<!--SERIAL {spec.serial}-->"
    )


def expected_json(spec: ProjectSpec) -> dict:
    files = []
    for files_of_release in spec.releases.values():
        for f in files_of_release:
            entry = {
                "filename": f.filename,
                "url": f"../..{f.path}",
                "hashes": {"sha256": f.sha256},
                "size": len(f.content),
                "upload-time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "yanked": f.yanked if isinstance(f.yanked, str) else bool(f.yanked),
            }
            if f.requires_python:
                entry["requires-python"] = f.requires_python
            if f.metadata:
                entry["core-metadata"] = {"sha256": hashlib.sha256(f.metadata).hexdigest()}
            files.append(entry)
    return {
        "meta": {"api-version": "1.1", "_last-serial": str(spec.serial)},
        "name": canonicalize_name(spec.name),
        "versions": sorted(spec.releases, key=Version),  # the upstream page's order
        "files": files,
    }


def assert_mirror_equals_upstream(h: MirrorHarness) -> None:
    """Every file with its upstream sha256 and nothing else; every page as the corpus says."""
    assert h.package_files() == h.expected_files()
    assert not h.stray_temporaries()
    specs = h.corpus.projects
    for canonical, spec in specs.items():
        assert h.web(f"simple/{canonical}/index.html").read_text() == expected_html(spec)
        assert h.web(f"simple/{canonical}/index.v1_html").read_text() == expected_html(spec)
        page = h.json_page(canonical)
        exp = expected_json(spec)
        assert page == exp
        stored = json.loads(h.web(f"json/{canonical}").read_text())
        assert stored["last_serial"] == spec.serial
        assert h.web(f"pypi/{canonical}/json").read_bytes() == h.web(f"json/{canonical}").read_bytes()
    root = h.web("simple/index.html").read_text()
    assert re.findall(r'<a href="([^"]+)/">', root) == sorted(specs)
    root_json = json.loads(h.web("simple/index.v1_json").read_text())
    assert sorted(p["name"] for p in root_json["projects"]) == sorted(s.name for s in specs.values())
    mirrored = {d.name for d in h.web("simple").iterdir() if d.is_dir()}
    assert mirrored <= set(specs) | {"index"}


# -- first run -----------------------------------------------------------------------------
def test_first_run_writes_the_commented_default_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_logging: None,
) -> None:
    conf = tmp_path / "etc" / "bandersnatch.conf"
    conf.parent.mkdir()
    monkeypatch.setattr(configuration, "DEFAULT_CONFIG_PATH", conf)  # only the default path gets one
    code = cli.main(["mirror"])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert result.returncode == 6
    assert conf.read_text() == (ROOT / "examples" / "bandersnatch.conf").read_text()
    assert str(conf) in result.stderr and "review" in result.stderr.lower()
    assert all(LOG_LINE.match(line) for line in result.stderr.splitlines())


def test_first_run_in_a_missing_directory_suggests_dash_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_logging: None
) -> None:
    monkeypatch.setattr(configuration, "DEFAULT_CONFIG_PATH", tmp_path / "nowhere" / "bandersnatch.conf")
    code = cli.main(["mirror"])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "-c" in lines[0] and "Traceback" not in result.stderr


def test_log_config_replaces_the_default_log_setup(harness: MirrorHarness, tmp_path: Path) -> None:
    log_file = tmp_path / "mirror.log"
    log_config = tmp_path / "logging.ini"
    log_config.write_text(
        "[loggers]\nkeys = root\n[handlers]\nkeys = file\n[formatters]\nkeys = plain\n"
        "[logger_root]\nlevel = INFO\nhandlers = file\n"
        f"[handler_file]\nclass = FileHandler\nformatter = plain\nargs = ({str(log_file)!r},)\n"
        "[formatter_plain]\nformat = custom %(levelname)s %(message)s\n"
    )
    harness.configure({"log-config": str(log_config)})
    result = harness.cli("mirror")
    assert result.returncode == 0, result.stderr
    lines = log_file.read_text().splitlines()
    assert lines and all(line.startswith("custom ") for line in lines)
    assert "Summary: 3 projects synced, 0 failed" in lines[-1]
    assert "Summary" not in result.stderr


# -- a full sync ---------------------------------------------------------------------------
def test_full_sync_mirrors_every_file_and_page(harness: MirrorHarness) -> None:
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert_mirror_equals_upstream(harness)
    assert (harness.dir / "status").read_text() == str(harness.corpus.serial)
    assert (harness.dir / "generation").read_text() == "5"
    assert not (harness.dir / "todo").exists()
    assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\d\n", harness.web("last-modified").read_text())
    for path, f in harness.corpus.files().items():
        assert os.stat(harness.dir / "web" / path.lstrip("/")).st_mtime == f.upload_time.timestamp()
    lines = result.stderr.strip().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert "Summary: 3 projects synced, 0 failed" in lines[-1]
    assert f"serial {harness.corpus.serial}" in lines[-1]


def test_second_run_downloads_nothing_and_rewrites_nothing(harness: MirrorHarness) -> None:
    assert harness.run().exit_code == 0
    mtimes = {p: p.stat().st_mtime_ns for p in harness.dir.rglob("*") if p.is_file() and p.name != ".lock"}
    harness.upstream.clear()
    report = harness.run()
    assert report.exit_code == 0 and report.files == 0 and report.synced == 0
    assert set(harness.upstream.counts()) == {"xmlrpc"}
    assert harness.upstream.count() <= 2
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_force_check_fetches_metadata_but_no_file(harness: MirrorHarness) -> None:
    harness.run()
    harness.upstream.clear()
    report = harness.run(force_check=True)
    assert report.exit_code == 0 and report.files == 0
    counts = harness.upstream.counts()
    assert counts["json"] == 3 and counts["file"] == 0 and counts["metadata"] == 0


def test_present_files_are_not_downloaded_again_after_losing_state(harness: MirrorHarness) -> None:
    harness.run()
    (harness.dir / "status").unlink()
    harness.upstream.clear()
    assert harness.run().exit_code == 0
    assert harness.upstream.counts()["file"] == 0


def test_compare_method_stat_notices_a_changed_size(harness: MirrorHarness) -> None:
    harness.configure({"compare-method": "stat"})
    harness.run()
    victim = next(p for p in harness.web("packages").rglob("small-0.2.tar.gz"))
    victim.write_bytes(b"short")
    harness.run(force_check=True)
    assert harness.package_files() == harness.expected_files()


def test_hash_index_and_simple_format_json(harness: MirrorHarness) -> None:
    harness.configure({"hash-index": "true", "simple-format": "JSON"})
    assert harness.run().exit_code == 0
    assert harness.web("simple/f/foo-bar-baz/index.v1_json").exists()
    assert not harness.web("simple/f/foo-bar-baz/index.html").exists()
    assert not harness.web("simple/foo-bar-baz").exists()
    assert harness.package_files() == harness.expected_files()


def test_core_metadata_off_skips_metadata_files(harness: MirrorHarness) -> None:
    harness.configure({"core-metadata": "false", "release-files": "true"})
    harness.run()
    assert not [p for p in harness.package_files() if p.endswith(".metadata")]


# -- failures ------------------------------------------------------------------------------
def test_hash_mismatch_fails_the_project_and_leaves_nothing(harness: MirrorHarness, caplog: pytest.LogCaptureFixture) -> None:
    bad = harness.corpus.projects["small"].releases["0.2"][0]
    bad.announced_sha256 = "0" * 64
    serial_before = 0
    report = harness.run()
    assert report.exit_code == 1 and "small" in report.failed and "sha256" in report.failed["small"]
    assert not (harness.dir / "web" / bad.path.lstrip("/")).exists()
    assert not harness.stray_temporaries()
    assert not (harness.dir / "status").exists() or int((harness.dir / "status").read_text()) == serial_before
    assert "small" in (harness.dir / "todo").read_text()
    assert harness.web("simple/foo-bar-baz/index.html").exists()  # the rest of the mirror is there
    assert any("small" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    bad.announced_sha256 = None
    harness.corpus.touch("small")
    assert harness.run().exit_code == 0
    assert_mirror_equals_upstream(harness)
    assert int((harness.dir / "status").read_text()) == harness.corpus.serial


def test_upstream_500s_fail_the_project_with_its_name(harness: MirrorHarness) -> None:
    harness.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=500)
    report = harness.run()
    assert report.exit_code == 1 and list(report.failed) == ["small"]
    assert "500" in report.failed["small"]
    assert harness.web("simple/tiny-lib/index.html").exists()
    harness.upstream.clear()
    assert harness.run().exit_code == 0
    assert_mirror_equals_upstream(harness)


def test_cli_exits_1_and_names_the_failed_project(harness: MirrorHarness) -> None:
    harness.upstream.fault(r"^/pypi/small/json$", "status", times=None, status=404 + 100)  # 504 forever
    result = harness.main("mirror")
    assert result.returncode == 1
    assert re.search(r"ERROR: .*small.*504", result.stderr)
    assert "1 failed" in result.stderr.strip().splitlines()[-1]


def test_stop_on_error_stops_at_the_first_failure(harness: MirrorHarness) -> None:
    for i in range(30):
        harness.corpus.add_file(f"extra-{i:02d}", "1.0")
    harness.configure({"stop-on-error": "true", "workers": "1"})
    harness.upstream.fault(r"^/pypi/Foo.Bar_Baz/json$|^/pypi/foo-bar-baz/json$", "status", times=None, status=500)
    report = harness.run()
    assert report.exit_code == 1
    todo = (harness.dir / "todo").read_text().split("\n")
    assert len(todo) > 3 and report.synced < 33
    assert not (harness.dir / "status").exists()


@pytest.mark.parametrize(
    "url_path",
    [
        "/packages/../../../escaped.tar.gz",
        "/packages/aa/%2e%2e/%2e%2e/%2e%2e/escaped.tar.gz",
        "/elsewhere/escaped.tar.gz",
        "/packages/aa\\..\\..\\escaped.tar.gz",
        "/packages//escaped.tar.gz",
        "/packages/aa/%00/escaped.tar.gz",
    ],
)
def test_file_urls_that_escape_the_mirror_fail_the_project(harness: MirrorHarness, url_path: str) -> None:
    harness.corpus.add_file("evil", "1.0", "escaped.tar.gz", url_path=url_path)
    report = harness.run()
    assert report.exit_code == 1 and "evil" in report.failed
    assert "path" in report.failed["evil"].lower() or "packages" in report.failed["evil"]
    assert not list(harness.root.rglob("escaped.tar.gz"))
    assert not harness.web("simple/evil").exists()
    assert harness.web("simple/small/index.html").exists()


@pytest.mark.parametrize("name", ["../../etc", "..", "a/../../b", "/abs", "bad\\name", "nul\x00"])
def test_project_names_that_escape_the_mirror_fail(harness: MirrorHarness, name: str) -> None:
    harness.corpus.add_file(name, "1.0", "x-1.0.tar.gz")
    report = harness.run()
    assert report.exit_code == 1
    assert not list((harness.root).glob("etc*")) and not (harness.root / "b").exists()
    for p in harness.dir.rglob("*"):
        assert p.resolve().is_relative_to(harness.dir.resolve())
    assert harness.web("simple/small/index.html").exists()


def test_lock_contention_exits_3(harness: MirrorHarness) -> None:
    import filelock

    harness.dir.mkdir(parents=True)
    with filelock.FileLock(str(harness.dir / ".lock"), timeout=0):
        result = harness.cli("mirror")
    assert result.returncode == 3
    assert "lock" in result.stderr.lower() and "Traceback" not in result.stderr
    assert not harness.web("simple").exists()


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"workers": "many"}, "workers"),
        ({"workers": "0"}, "workers"),
        ({"workers": "100"}, "workers"),
        ({"directory": None}, "directory"),
        ({"directory": "relative/path"}, "directory"),
        ({"master": "ftp://example.invalid"}, "master"),
        ({"allow-non-https": "false"}, "allow-non-https"),
        ({"simple-format": "XML"}, "simple-format"),
    ],
)
def test_bad_configs_exit_2_with_one_line(harness: MirrorHarness, keys: dict, needle: str) -> None:
    harness.configure(keys)
    result = harness.main("mirror")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, lines


def test_malformed_ini_exits_2(harness: MirrorHarness) -> None:
    harness.conf.write_text("[mirror\ndirectory = /x\n")
    result = harness.main("mirror")
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -- a real client -------------------------------------------------------------------------
def test_pip_installs_from_the_mirror(tmp_path: Path, upstream: UpstreamServer) -> None:
    filename, data, meta = make_wheel("Mirror-Probe", "1.2.3", "VALUE = 'from the mirror'\n")
    upstream.corpus.add_file("Mirror-Probe", "1.2.3", filename, data, metadata=meta)
    h = MirrorHarness(tmp_path, upstream)
    assert h.run().exit_code == 0
    target = tmp_path / "site"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
         "--index-url", (h.dir / "web" / "simple").as_uri(), "--target", str(target), "mirror-probe"],
        check=True, env=env, capture_output=True, timeout=120,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import mirror_probe; print(mirror_probe.VALUE)"],
        env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "from the mirror"
