"""An operator's first hour (issue 24), through the command line: typos that would mirror the
whole index stop at once, the todo obeys today's config, and every message tells the truth."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bandersnatch_classic import config as configuration

from .conftest import MirrorHarness
from .upstream import make_wheel


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR: " in line]


# -- 1. a filter that is on but allows everything stops the run ----------------------------------
@pytest.mark.parametrize(
    ("sections", "hint"),
    [
        ("[plugins]\nenabled = allowlist_project\n[allowlists]\npackages = small\n",
         "(the config has [allowlists]: did you mean [allowlist]?)"),
        ("[plugins]\nenabled = allowlist_project\n[allowlist]\npackage = small\n",
         "([allowlist] has 'package': did you mean 'packages'?)"),
        ("[plugins]\nenabled = allowlist_project\n[allowlist]\npackages =\n", ""),
        ("[plugins]\nenabled = blocklist_project\n[blocklist]\n", ""),
    ],
    ids=["misspelt-section", "misspelt-key", "empty-packages", "empty-blocklist"],
)
def test_an_enabled_filter_that_allows_everything_stops_before_any_request(
    harness: MirrorHarness, sections: str, hint: str
) -> None:
    harness.configure(sections=sections)
    result = harness.main("mirror")
    assert result.returncode == 2, result.stderr
    (line,) = _errors(result)
    assert "is enabled but does nothing: [" in line and hint in line and "[plugins] enabled" in line
    assert harness.upstream.count() == 0
    assert not (harness.dir / "todo").exists()


def test_a_filter_section_without_its_filter_is_named_on_every_run(harness: MirrorHarness) -> None:
    harness.configure(sections="[plugins]\nenabled = latest_release\n[latest_release]\nkeep = 1\n"
                               "[blocklist]\npackages = small\n")
    for _ in range(2):
        result = harness.main("mirror")
        assert result.returncode == 0, result.stderr
        assert ("WARNING: [blocklist] packages has no effect: enable blocklist_project or blocklist_release "
                "in [plugins] enabled") in result.stderr
    assert harness.web("simple/small/index.html").exists()  # as the warning says: not blocked


# -- 2. the todo obeys today's config ------------------------------------------------------------
def test_names_the_filters_now_exclude_leave_the_todo_without_a_request(harness: MirrorHarness) -> None:
    """A run left the whole index in todo (an allowlist typo); the fixed config must not work through it."""
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = small\n")
    target = harness.corpus.serial
    (harness.dir).mkdir(parents=True)
    (harness.dir / "todo").write_text(f"{target}\nfoo-bar-baz 0\ntiny-lib 0\nsmall 0\n")
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Dropped 2 projects the filters now exclude from the unfinished run's todo" in result.stderr
    assert "Resuming an unfinished run: 1 project left" in result.stderr
    asked = [path for _method, path in harness.upstream.requests]
    assert not [p for p in asked if "tiny" in p.lower() or "foo" in p.lower()], asked
    assert harness.web("simple/small/index.html").exists() and not (harness.dir / "todo").exists()


# -- 4. -c names a file that must exist ------------------------------------------------------------
@pytest.mark.parametrize("command", ["mirror", "status", "verify", "delete small", "serve"])
def test_a_missing_config_given_with_c_is_a_usage_error(harness: MirrorHarness, tmp_path: Path, command: str) -> None:
    typo = tmp_path / "bandersnatch.cnof"
    result = harness.main(*command.split(), config=typo)
    assert result.returncode == 2, result.stderr
    (line,) = _errors(result)
    assert f"-c {typo}: no such file" in line
    assert not typo.exists()


@pytest.mark.parametrize("command", ["status", "verify", "delete small", "serve"])
def test_only_mirror_and_sync_write_the_first_run_config_at_the_default_path(
    harness: MirrorHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, keep_logging: None
) -> None:
    default = tmp_path / "etc" / "bandersnatch.conf"
    default.parent.mkdir()
    monkeypatch.setattr(configuration, "DEFAULT_CONFIG_PATH", default)
    from bandersnatch_classic import cli

    code = cli.main(command.split())
    assert code == 2 and not default.exists()
    assert cli.main(["mirror"]) == 6 and "[mirror]" in default.read_text()


# -- 5. logs sized for syslog, numbers that agree --------------------------------------------------
def test_unserved_sidecars_are_one_warning_per_project_with_the_count(harness: MirrorHarness) -> None:
    wheel, data, meta = make_wheel("Tiny-Lib", "2.1")
    harness.corpus.add_file("Tiny-Lib", "2.1", wheel, data, metadata=meta)
    harness.upstream.fault(r"tiny_lib-.*\.metadata$", "status", times=None, status=404)
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING: " in line]
    assert len(warnings) == 1, warnings
    assert re.search(r"WARNING: tiny-lib: the upstream did not serve 2 \.metadata files \(.*404.*; --debug names every "
                     r"file\); mirrored without them", warnings[0]), warnings


def test_plurals_in_the_summary(harness: MirrorHarness) -> None:
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = small\n")
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "INFO: 1 project to sync via xmlrpc" in result.stderr
    assert "Summary: 1 project synced, 0 failed, 0 removed; 3 files," in result.stderr.splitlines()[-1]


def test_a_failed_project_is_counted_as_left_in_todo(harness: MirrorHarness) -> None:
    harness.upstream.fault(r"^/pypi/small/json", "status", times=None, status=500)
    result = harness.main("mirror")
    assert result.returncode == 1
    summary = result.stderr.splitlines()[-1]
    assert "Summary: 2 projects synced, 1 failed" in summary
    assert summary.endswith("; 1 left in todo (the failed ones are retried by the next run)"), summary


def test_an_interrupted_run_says_how_much_is_left_in_todo_and_why(harness: MirrorHarness) -> None:
    """SIGTERM arrives while the first file is fetched: the summary counts what todo holds. The
    first run of the html method has no serial yet: the summary says so rather than "serial 0"."""
    sent: list[bool] = []

    def terminate(method: str, path: str) -> None:
        if path.startswith("/packages/") and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, as Ctrl-C would be

    harness.configure({"workers": "1", "api-method": "html"})
    harness.upstream.on_request = terminate
    result = harness.main("mirror")
    harness.upstream.on_request = None
    assert result.returncode == 130, result.stderr
    todo = (harness.dir / "todo").read_text().splitlines()[1:]
    summary = result.stderr.splitlines()[-1]
    assert todo and summary.endswith(f"; serial unknown via html; {len(todo)} left in todo (stopped: interrupted)"), (
        summary, todo)


def test_resuming_an_interrupted_first_allowlist_run_syncs_only_what_is_left(harness: MirrorHarness) -> None:
    """A first run without serials (html, no serial header) stopped after some projects: its todo
    has target 0 and no status exists. The next run syncs what is left, not everything again."""
    harness.upstream.serial_header = False
    harness.configure({"api-method": "simple"}, sections="[plugins]\nenabled = allowlist_project\n"
                      "[allowlist]\npackages =\n    small\n    tiny-lib\n    foo-bar-baz\n")
    assert harness.main("mirror").returncode == 0
    (harness.dir / "status").unlink()  # as if the first run had stopped before its end ...
    (harness.dir / "todo").write_text("0\ntiny-lib 0\n")  # ... with one project left
    harness.upstream.clear()
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Resuming an unfinished run: 1 project left" in result.stderr
    assert "INFO: 1 project to sync via simple" in result.stderr
    assert harness.upstream.counts()["json"] == 1  # tiny-lib's metadata only; the others' pages were asked


def test_a_held_lock_is_a_warning_not_an_error(harness: MirrorHarness) -> None:
    from bandersnatch_classic.sync import mirror_lock

    with mirror_lock(harness.dir):
        result = harness.main("mirror")
    assert result.returncode == 3
    assert "WARNING: another run holds" in result.stderr and " ERROR: " not in result.stderr


# -- 6. verify --delete, closed pipes, argument order, --help --------------------------------------
def test_verify_delete_names_each_path_it_removes(harness: MirrorHarness) -> None:
    assert harness.main("mirror").returncode == 0
    stray = harness.web("packages/ab/cd/stray-1.0.tar.gz")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"nobody's")
    result = harness.main("verify", "--delete")
    assert result.returncode == 1, result.stderr  # something was found (and reclaimed)
    assert "INFO: Deleted web/packages/ab/cd/stray-1.0.tar.gz (8 B)" in result.stderr
    assert not stray.exists()


@pytest.mark.parametrize("args", [["status", "--json"], ["status"]])
def test_a_closed_pipe_ends_a_command_quietly(harness: MirrorHarness, args: list[str]) -> None:
    """``bandersnatch status --json | head -c 10``: the reader is gone before the output is written."""
    assert harness.main("mirror").returncode == 0
    cmd = [sys.executable, "-m", "bandersnatch_classic", "-c", str(harness.conf), *args]
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    read, write = os.pipe()
    os.close(read)  # nobody will read: the first write meets a broken pipe
    try:
        proc = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              env=env, timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr  # status keeps its own status: the mirror is healthy


def test_a_global_option_after_the_command_gets_the_right_order(harness: MirrorHarness, keep_logging: None) -> None:
    result = harness.main("mirror", "-c", str(harness.conf), config=harness.conf)
    assert result.returncode == 2
    assert (f"global options such as -c go before the command: bandersnatch -c {harness.conf} -c {harness.conf} mirror"
            in result.stderr)
    from bandersnatch_classic import cli

    with pytest.raises(SystemExit):
        cli.main(["mirror", "--config", "x.conf", "--force-check"])


def test_the_hint_rebuilds_the_command_line(capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    from bandersnatch_classic import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["mirror", "--force-check", "-c", "my file.conf"])
    assert info.value.code == 2
    assert ("global options such as -c go before the command: bandersnatch -c 'my file.conf' mirror --force-check"
            in capsys.readouterr().err)


@pytest.mark.parametrize("command", ["mirror", "sync", "verify", "delete", "status", "serve"])
def test_every_subcommand_help_says_what_it_does(command: str, capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    from bandersnatch_classic import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: bandersnatch {command}")
    description = text.split("\n\n")[1]  # after the usage, before the options
    assert description.strip() and not description.startswith(("options", "positional")), text


# -- 7. the same messages on every Python ----------------------------------------------------------
def test_a_config_syntax_error_is_one_line_on_every_python(harness: MirrorHarness) -> None:
    """Python 3.13 gives configparser's bad line as it is (with its newline), older ones as its repr."""
    harness.conf.write_text(f"[mirror]\ndirectory = {harness.dir}\nno equals here\n")
    result = harness.main("mirror")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.endswith("line 3: 'no equals here' is not 'key = value' (a key and its value are separated by '=')")


# -- 8. docs that hold ---------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
TOOL = "/opt/bandersnatch/bin/bandersnatch -c /etc/bandersnatch.conf"


def _cron_command(marker: str) -> str:
    """The command of the documented cron line that contains ``marker`` (schedule and user cut off)."""
    lines = [line for line in (ROOT / "docs" / "operations.md").read_text().splitlines() if marker in line and "* *" in line]
    assert len(lines) == 1, lines
    return lines[0].strip().split(None, 6)[6]


@pytest.mark.skipif(not os.path.exists("/bin/bash") or not shutil.which("logger"), reason="needs bash and logger(1)")
@pytest.mark.parametrize(("broken", "mailed"), [(False, ""), (True, "bandersnatch mirror failed with exit status 2;")])
def test_the_documented_cron_line_reports_a_failed_run(harness: MirrorHarness, broken: bool, mailed: str) -> None:
    """Under SHELL=/bin/bash the documented line prints (so cron mails) one line when the run failed."""
    if broken:
        harness.configure({"workers": "zero"})
    tool = f"{shlex.quote(sys.executable)} -m bandersnatch_classic -c {shlex.quote(str(harness.conf))}"
    command = _cron_command("set -o pipefail").replace(TOOL, tool)
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    result = subprocess.run(["/bin/bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.strip().startswith(mailed) if mailed else result.stdout == "", result
    assert result.stderr == ""
    if os.path.exists("/bin/dash"):  # as the docs say: dash refuses the line, loudly
        result = subprocess.run(["/bin/dash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
        assert "pipefail" in result.stderr and result.returncode != 0


def test_the_documented_status_line_prints_only_when_unhealthy(harness: MirrorHarness) -> None:
    tool = f"{shlex.quote(sys.executable)} -m bandersnatch_classic -c {shlex.quote(str(harness.conf))}"
    command = _cron_command("status >/dev/null").replace(TOOL, tool)
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    assert harness.main("mirror").returncode == 0
    healthy = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")
    harness.upstream.fault(r"^/pypi/small/json", "status", times=None, status=500)
    harness.upstream.corpus.touch("small")
    assert harness.main("mirror").returncode == 1
    unhealthy = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert unhealthy.returncode == 1 and unhealthy.stdout == ""
    assert len(unhealthy.stderr.splitlines()) == 1 and "ERROR: Mirror unhealthy" in unhealthy.stderr


def test_the_benchmark_removes_its_temporary_directory(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "a", "--scale", "0.001", "--tools", "ours"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mirror check: ok" in result.stdout and f"removed {tmp_path}/bench-" in result.stdout
    assert not list(tmp_path.glob("bench-*"))
