"""Pre-flight through the CLI: local mistakes are one clear line and exit 2, before anything is written.

Some cases run the command as the unprivileged user ``nobody`` (the tests run as root
here); they are skipped with the reason where that is not possible.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MirrorHarness

NOBODY = 65534


def _one_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run exited 2 with exactly one line, an ERROR holding every word, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and " ERROR: " in lines[0] and "Traceback" not in result.stderr, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@functools.lru_cache(maxsize=1)
def _nobody_python() -> tuple[list[str], dict[str, str]] | str:
    """A Python that ``nobody`` may run, with this checkout importable; or why there is none.

    The test interpreter may live where only root can reach it (a home directory): then
    the system's interpreter of the same version runs this checkout's sources and the
    virtualenv's pure-Python dependencies.
    """
    if os.geteuid() != 0:
        return "needs root to run a command as nobody"
    import site

    import bandersnatch_classic

    src = str(Path(bandersnatch_classic.__file__).resolve().parents[1])
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "HOME": "/nonexistent"}
    candidates = [([sys.executable], env)]
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin:/usr/local/bin")
    if system:
        candidates.append(([system], {**env, "PYTHONPATH": os.pathsep.join([src, *site.getsitepackages()])}))
    reasons = []
    for cmd, cmd_env in candidates:
        try:
            probe = subprocess.run(
                [*cmd, "-c", "import bandersnatch_classic.cli"], preexec_fn=_as_nobody, capture_output=True, env=cmd_env
            )
        except OSError as exc:
            reasons.append(f"{cmd[0]}: {exc.strerror}")
            continue
        if probe.returncode == 0:
            return cmd, cmd_env
        reasons.append(f"{cmd[0]}: {probe.stderr.decode().strip().splitlines()[-1:]}")
    return "no Python interpreter nobody may run with this checkout (" + "; ".join(reasons) + ")"


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


unprivileged = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to run a command as the unprivileged user nobody"
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bandersnatch-preflight-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cli_as_nobody(harness: MirrorHarness, *args: str) -> subprocess.CompletedProcess[str]:
    """``bandersnatch -c CONF ARGS`` as the unprivileged user nobody (skips where impossible)."""
    python = _nobody_python()
    if isinstance(python, str):
        pytest.skip(python)
    cmd, env = python
    return subprocess.run(
        [*cmd, "-m", "bandersnatch_classic", "-c", str(harness.conf), *args],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, preexec_fn=_as_nobody,
    )


@pytest.fixture
def nobody_harness(shared_dir: Path, harness: MirrorHarness) -> MirrorHarness:
    """The harness's config, readable by nobody, with the mirror directory in ``shared_dir``."""
    conf = shared_dir / "bandersnatch.conf"
    harness.conf = conf
    harness.dir = shared_dir / "mirror"
    harness.configure({"directory": str(harness.dir)})
    conf.chmod(0o644)
    return harness


# -- the mirror directory -------------------------------------------------------------------
def test_a_directory_that_is_a_file(harness: MirrorHarness) -> None:
    harness.dir.write_text("oops")
    _one_error(harness.cli("mirror"), str(harness.dir), "is not a directory", "user root")
    assert harness.dir.read_text() == "oops"


@unprivileged
def test_a_mirror_directory_the_user_cannot_write(nobody_harness: MirrorHarness) -> None:
    h = nobody_harness
    h.dir.mkdir(mode=0o755)
    line = _one_error(_cli_as_nobody(h, "mirror"), str(h.dir), "user nobody", "owned by root", "chown")
    assert "mode 0755" in line
    assert list(h.dir.iterdir()) == []  # not even the lock


@unprivileged
def test_a_mirror_directory_the_user_cannot_create(nobody_harness: MirrorHarness, shared_dir: Path) -> None:
    h = nobody_harness
    h.configure({"directory": str(shared_dir / "srv" / "pypi")})
    (shared_dir / "srv").mkdir(mode=0o755)
    _one_error(_cli_as_nobody(h, "mirror"), "cannot create", str(shared_dir / "srv" / "pypi"), "user nobody", "mkdir -p")
    assert not (shared_dir / "srv" / "pypi").exists()


#: Every state file of the on-disk contract (docs/design.md, section 3).
STATE_FILES = [
    ".lock", "generation", "status", "todo", "projects.json", "projects.journal", "upstream-method",
    "run-history.json", "missing-metadata", "verify-progress", "page-validators.json", "dependencies.json",
]


def test_preflight_checks_every_state_file_the_contract_names() -> None:
    from bandersnatch_classic import statefiles

    assert sorted(statefiles.STATE_FILES) == sorted(STATE_FILES)


@pytest.mark.parametrize("name", ["page-validators.json", "dependencies.json", "verify-progress", "status"])
def test_a_state_file_that_is_a_directory(harness: MirrorHarness, name: str) -> None:
    """Refused before the lock is taken, whichever state file it is."""
    (harness.dir / name).mkdir(parents=True)
    _one_error(harness.cli("mirror"), str(harness.dir / name), "is not a regular file")
    assert sorted(p.name for p in harness.dir.iterdir()) == [name]  # not even the lock


@unprivileged
def test_a_state_file_the_user_cannot_write(nobody_harness: MirrorHarness) -> None:
    """The mirror was made by root, then handed to nobody, all but its lock file."""
    h = nobody_harness
    assert h.cli("mirror").returncode == 0
    for path in [h.dir, *h.dir.rglob("*")]:
        if path.name != ".lock":
            os.lchown(path, NOBODY, NOBODY)
    (h.dir / ".lock").chmod(0o644)
    _one_error(_cli_as_nobody(h, "mirror"), str(h.dir / ".lock"), "user nobody", "chown nobody")


@unprivileged
def test_web_owned_by_another_user(nobody_harness: MirrorHarness) -> None:
    h = nobody_harness
    assert h.cli("mirror").returncode == 0
    for path in [h.dir, *h.dir.iterdir()]:
        if path.name != "web":
            os.lchown(path, NOBODY, NOBODY)
    _one_error(_cli_as_nobody(h, "mirror"), str(h.dir / "web"), "user nobody")


@unprivileged
def test_an_unprivileged_user_can_run_a_mirror_it_owns(nobody_harness: MirrorHarness) -> None:
    h = nobody_harness
    h.dir.mkdir()
    os.chown(h.dir, NOBODY, NOBODY)
    result = _cli_as_nobody(h, "mirror")
    assert result.returncode == 0, result.stderr
    assert all(p.stat().st_uid == NOBODY for p in h.dir.rglob("*"))


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True).returncode == 0


def test_a_read_only_file_system(harness: MirrorHarness, tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    if not _mount_tmpfs(mount, "size=1m,ro"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        harness.configure({"directory": str(mount / "pypi")})
        _one_error(harness.cli("mirror"), str(mount), "read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- other files the run needs ---------------------------------------------------------------
def test_a_missing_log_config(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"log-config": str(tmp_path / "nowhere.ini")})
    _one_error(harness.main("mirror"), "log-config", str(tmp_path / "nowhere.ini"), "does not exist")
    assert not harness.dir.exists()


def test_a_log_config_that_is_not_one(harness: MirrorHarness, tmp_path: Path) -> None:
    bad = tmp_path / "logging.ini"
    bad.write_text("[loggers]\nkeys = root\n")
    harness.configure({"log-config": str(bad)})
    _one_error(harness.cli("mirror"), "log-config", str(bad), "[handlers]")


def test_a_log_config_that_cannot_be_applied(harness: MirrorHarness, tmp_path: Path) -> None:
    bad = tmp_path / "logging.ini"
    bad.write_text(
        "[loggers]\nkeys = root\n[handlers]\nkeys = h\n[formatters]\nkeys =\n"
        "[logger_root]\nhandlers = h\n[handler_h]\nclass = NoSuchHandler\nargs = ()\n"
    )
    harness.configure({"log-config": str(bad)})
    _one_error(harness.cli("mirror"), "log-config", "cannot be applied")
    assert not harness.dir.exists()


def test_a_diff_file_in_a_missing_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"diff-file": str(tmp_path / "missing" / "diff.txt")})
    _one_error(harness.main("mirror"), "diff-file", str(tmp_path / "missing"), "mkdir -p")
    assert not harness.dir.exists()  # checked before the sync, not after it


# -- the command line and the file -------------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["serve", "--port", "99999"], ["--port", "'99999'", "from 1 to 65535"]),
        (["serve", "--port", "0"], ["--port", "from 1 to 65535"]),
        (["verify", "--workers", "-3"], ["--workers", "'-3'", "1 or more"]),
        (["verify", "--workers", "0"], ["--workers", "1 or more"]),
    ],
)
def test_argument_ranges(harness: MirrorHarness, args: list[str], words: list[str]) -> None:
    result = harness.main(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert all(word in error for word in words), error


@pytest.mark.parametrize(
    "text, words",
    [
        ("[mirror]\ndirectory = /srv\nthis line is wrong\n", ["line 3", "'this line is wrong", "key = value"]),
        ("directory = /srv\n[mirror]\n", ["line 1", "before any [section]"]),
        ("[mirror]\ndirectory = /a\ndirectory = /b\n", ["line 3", "directory is set a second time"]),
        ("[mirror]\ndirectory = /a\n[mirror]\n", ["line 3", "[mirror] appears a second time"]),
    ],
)
def test_ini_syntax_errors_name_the_file_and_line(harness: MirrorHarness, text: str, words: list[str]) -> None:
    harness.conf.write_text(text)
    _one_error(harness.main("mirror"), str(harness.conf), "not valid INI", *words)


def test_a_misspelt_key_gets_did_you_mean(harness: MirrorHarness) -> None:
    harness.configure({"wokers": "5"})
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Unknown key 'wokers' in [mirror]" in result.stderr and "did you mean 'workers'?" in result.stderr


def test_a_misspelt_directory_is_named_in_the_error(harness: MirrorHarness) -> None:
    harness.configure({"directory": None, "directroy": "/srv/pypi"})
    _one_error(harness.main("mirror"), "directory is required", "'directroy' is set")


def test_a_misspelt_filter_key_gets_did_you_mean(harness: MirrorHarness) -> None:
    harness.configure(sections="[plugins]\nenabled = allowlist_project\n[allowlist]\npackages = small\npackage = six\n")
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert "Unknown key 'package' in [allowlist]" in result.stderr and "did you mean 'packages'?" in result.stderr


@unprivileged
def test_a_config_the_user_cannot_read(nobody_harness: MirrorHarness) -> None:
    nobody_harness.conf.chmod(0o600)
    _one_error(_cli_as_nobody(nobody_harness, "mirror"), "cannot read config", str(nobody_harness.conf), "user nobody")
