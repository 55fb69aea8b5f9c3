"""Local I/O errors during a run: not retried, not blamed on the upstream; the run stops, keeps todo, exits 5.

The disk-full case runs on a real size-limited tmpfs; the permission case runs the
command as the unprivileged user nobody. Both are skipped, with the reason, where the
machine does not allow them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MirrorHarness
from .test_preflight import NOBODY, _cli_as_nobody, _mount_tmpfs, nobody_harness, shared_dir  # noqa: F401


def _local_error(result: subprocess.CompletedProcess[str]) -> str:
    """The run exited 5 with one ERROR line, then the summary, and no traceback."""
    assert result.returncode == 5, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if " ERROR: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, lines
    assert "Local I/O error" in errors[0] and "Upstream" not in errors[0]
    assert " INFO: Summary: " in lines[-1]
    return errors[0]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KB file system (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, "size=512k"):
        pytest.skip("cannot mount a size-limited tmpfs here (needs root and mount permission)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_the_run_with_exit_5_and_is_not_retried(harness: MirrorHarness, small_disk: Path) -> None:
    big = harness.corpus.add_file("big", "1.0", "big-1.0.tar.gz", os.urandom(1_000_000))
    harness.configure({"directory": str(small_disk / "pypi"), "workers": "1"})
    result = harness.main("mirror")
    line = _local_error(result)
    assert "No space left on device" in line and "big-1.0.tar.gz" in line
    assert [path for _, path in harness.upstream.requests].count(big.path) == 1  # a disk error is not a network error: no retry
    todo = (small_disk / "pypi" / "todo").read_text()
    assert "big" in todo.split()
    assert not list((small_disk / "pypi").rglob(".*.tmp"))
    # room again (the operator grew the file system): the next run finishes the work
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    again = harness.main("mirror")
    assert again.returncode == 0, again.stderr
    assert (small_disk / "pypi" / "web" / big.path.lstrip("/")).read_bytes() == big.content
    assert not (small_disk / "pypi" / "todo").exists()


def test_a_directory_the_user_cannot_write_mid_run_exits_5_naming_path_and_user(
    nobody_harness: MirrorHarness,
) -> None:
    """Pre-flight checks the top of the tree; deeper down the run meets the error and stops."""
    h = nobody_harness
    target = next(iter(h.corpus.files().values()))
    blocked = h.dir / "web" / "packages" / target.path.split("/")[2]
    blocked.mkdir(parents=True)  # owned by root, mode 0755
    for path in (h.dir, h.dir / "web", h.dir / "web" / "packages"):
        os.chown(path, NOBODY, NOBODY)
    result = _cli_as_nobody(h, "mirror")
    line = _local_error(result)
    assert str(blocked) in line and "Permission denied" in line and "running as user nobody" in line
    assert [path for _, path in h.upstream.requests].count(target.path) == 1
    assert (h.dir / "todo").exists()
    assert not (h.dir / "status").exists()



def test_a_read_only_file_system_below_the_mirror_exits_5(harness: MirrorHarness, tmp_path: Path) -> None:
    """One directory deep in the tree is a read-only mount: pre-flight cannot see it, the run meets EROFS."""
    target = next(iter(harness.corpus.files().values()))
    blocked = harness.dir / "web" / "packages" / target.path.split("/")[2]
    blocked.mkdir(parents=True)
    source = tmp_path / "elsewhere"
    source.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(source), str(blocked)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot bind-mount here (needs root and mount permission)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(blocked)], capture_output=True).returncode:
            pytest.skip("cannot remount a bind mount read-only here")
        result = harness.main("mirror")
    finally:
        subprocess.run(["umount", str(blocked)], check=True)
    line = _local_error(result)
    assert "Read-only file system" in line and str(blocked) in line
    assert [path for _, path in harness.upstream.requests].count(target.path) == 1
    assert (harness.dir / "todo").exists()
