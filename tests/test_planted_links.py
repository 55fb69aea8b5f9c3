"""Links planted below the mirror directory never redirect a write or a delete.

The classic setup runs the tool as root from cron over a directory a web server publishes,
so whoever else can write below ``web/`` may plant links there. Each test plants one kind,
as such a run would meet it, runs the real command, and checks that what the link points
at (outside the mirror) is untouched, and the exit status and the one line. A link where a
directory should be stops the run (exit 5, named); a link at a temporary's name is removed
(never followed) and the run goes on. The mirror directory itself may be a link.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .conftest import MirrorHarness

PRECIOUS = b"root's precious file\n"


def _snapshot(top: Path) -> dict[str, bytes | str]:
    """Everything below ``top``: files by their bytes, links by their target."""
    out: dict[str, bytes | str] = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            out[rel] = f"-> {path.readlink()}"
        elif path.is_file():
            out[rel] = path.read_bytes()
        else:
            out[rel] = "dir"
    return out


def _refused(result: subprocess.CompletedProcess[str], link: Path, action: str) -> str:
    """Exit 5, one ERROR line naming the link and what was refused, no traceback."""
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].endswith(
        f"{link} is a symbolic link; refusing to {action} through it "
        "(someone planted it, or the mirror was set up with links): remove it"
    ), errors[0]
    return errors[0]


def _outside(tmp_path: Path) -> Path:
    """A folder outside the mirror that a planted link points at, with a file in it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    return outside


def _release_dir(harness: MirrorHarness, filename: str) -> str:
    """``packages/xx/yy/<hash>`` of a corpus file, relative to ``web/``."""
    (path,) = [p for p in harness.corpus.files() if p.endswith(f"/{filename}")]
    return path.lstrip("/").rsplit("/", 1)[0]


def test_a_linked_project_page_folder_is_refused(harness: MirrorHarness, tmp_path: Path) -> None:
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    before = _snapshot(outside)
    link = harness.web("simple/small")
    shutil.rmtree(link)
    link.symlink_to(outside, target_is_directory=True)
    harness.corpus.add_file("small", "0.4", "small-0.4.tar.gz")
    result = harness.main("mirror")
    _refused(result, link, "write")
    assert _snapshot(outside) == before  # no page written there
    assert "small" in (harness.dir / "todo").read_text().split()  # to do again once the link is gone
    link.unlink()
    again = harness.main("mirror")
    assert again.returncode == 0, again.stderr
    assert b"small-0.4.tar.gz" in harness.web("simple/small/index.html").read_bytes()


def test_a_linked_packages_folder_is_refused(harness: MirrorHarness, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    before = _snapshot(outside)
    xx = _release_dir(harness, "small-0.2.tar.gz").split("/")[1]
    link = harness.web(f"packages/{xx}")
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    result = harness.main("mirror")
    _refused(result, link, "write")
    assert _snapshot(outside) == before  # no release file, no .metadata written there


def test_a_linked_web_folder_is_refused_but_a_linked_mirror_directory_is_fine(harness: MirrorHarness, tmp_path: Path) -> None:
    real = tmp_path / "disk" / "pypi"
    real.mkdir(parents=True)
    harness.dir.symlink_to(real, target_is_directory=True)  # operators do this
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert (real / "web/simple/small/index.html").is_file()
    outside = _outside(tmp_path)
    before = _snapshot(outside)
    shutil.rmtree(real / "web")
    (real / "web").symlink_to(outside, target_is_directory=True)
    refused = harness.main("mirror", "--force-check")
    _refused(refused, harness.dir / "web", "write")
    assert _snapshot(outside) == before


def test_a_link_at_the_temporary_name_of_a_page_is_removed_not_followed(harness: MirrorHarness, tmp_path: Path) -> None:
    victim = _outside(tmp_path) / "precious"
    planted = harness.web("simple/small/.index.html.tmp")
    planted.parent.mkdir(parents=True)
    planted.symlink_to(victim)
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == PRECIOUS
    page = harness.web("simple/small/index.html")
    assert not page.is_symlink() and b"small-0.2.tar.gz" in page.read_bytes()
    assert not planted.is_symlink() and harness.stray_temporaries() == []


def test_a_link_at_the_temporary_name_of_a_release_file_is_removed_not_followed(harness: MirrorHarness, tmp_path: Path) -> None:
    victim = _outside(tmp_path) / "precious"
    folder = harness.web(_release_dir(harness, "small-0.2.tar.gz"))
    folder.mkdir(parents=True)
    (folder / ".small-0.2.tar.gz.tmp").symlink_to(victim)
    # a dangling link is planted as well: O_CREAT alone would create its target
    dangling = tmp_path / "outside" / "created-by-root"
    other = harness.web(_release_dir(harness, "small-0.1.tar.gz"))
    other.mkdir(parents=True)
    (other / ".small-0.1.tar.gz.tmp").symlink_to(dangling)
    result = harness.main("mirror")
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == PRECIOUS and not dangling.exists()
    release = folder / "small-0.2.tar.gz"
    assert not release.is_symlink() and release.read_bytes() == harness.corpus.files()[f"/{release.relative_to(harness.web(''))}"].content
    assert harness.stray_temporaries() == []


def _moved_out(harness: MirrorHarness, rel: str, outside: Path) -> Path:
    """Move the mirror's folder ``rel`` (below ``web/``) outside, and link it back in its place."""
    folder = harness.web(rel)
    copy = outside / rel.replace("/", "_")
    shutil.move(folder, copy)
    folder.symlink_to(copy, target_is_directory=True)
    return folder


def test_delete_refuses_to_remove_release_files_through_a_linked_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    xx = _release_dir(harness, "small-0.2.tar.gz").split("/")[1]
    link = _moved_out(harness, f"packages/{xx}", outside)
    before = _snapshot(outside)
    result = harness.main("delete", "small")
    _refused(result, link, "delete")
    assert _snapshot(outside) == before


def test_delete_refuses_a_linked_page_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"release-files": "false"})  # only the pages to delete
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    link = _moved_out(harness, "simple/small", outside)
    before = _snapshot(outside)
    result = harness.main("delete", "small")
    _refused(result, link, "delete")
    assert _snapshot(outside) == before


def test_verify_delete_refuses_a_linked_folder_below_packages(harness: MirrorHarness, tmp_path: Path) -> None:
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    (outside / "stray.tar.gz").write_bytes(b"not referenced by any project")
    link = harness.web("packages/zz")
    link.symlink_to(outside, target_is_directory=True)
    before = _snapshot(outside)
    result = harness.main("verify", "--delete")
    _refused(result, link, "list files")
    assert _snapshot(outside) == before


def test_verify_delete_refuses_a_linked_packages_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    link = _moved_out(harness, "packages", outside)
    (outside / "packages" / "stray.tar.gz").write_bytes(b"not referenced by any project")
    before = _snapshot(outside)
    result = harness.main("verify", "--delete")
    _refused(result, link, "list files")
    assert _snapshot(outside) == before


def test_a_removal_upstream_refuses_to_delete_through_a_linked_folder(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.configure({"delete_missing_packages": "true"})
    assert harness.main("mirror").returncode == 0
    outside = _outside(tmp_path)
    xx = _release_dir(harness, "small-0.2.tar.gz").split("/")[1]
    link = _moved_out(harness, f"packages/{xx}", outside)
    before = _snapshot(outside)
    harness.corpus.delete_project("small")
    result = harness.main("mirror")
    _refused(result, link, "delete")
    assert _snapshot(outside) == before
