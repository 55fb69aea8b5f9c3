"""The on-disk layout: paths from what the upstream says, what pages reference, removing a project."""

from __future__ import annotations

import shutil

import pytest

from bandersnatch_classic import cli, layout
from bandersnatch_classic.errors import UnsafePath
from bandersnatch_classic.storage import FilesystemStorage
from bandersnatch_classic.verify import stored_project

from .conftest import MirrorHarness


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/simple/a/a-1.tar.gz",  # not below /packages/
        "https://files.example/packages/a.tar.gz",  # no directory below packages
        "https://files.example/packages/../etc/passwd",
        "https://files.example/packages/ab/%2E%2E/%2E%2E/x.tar.gz",
        "https://files.example/packages/ab//x.tar.gz",
        "https://files.example/packages/ab/x%5Cy.tar.gz",
        "https://files.example/packages/ab/x%00.tar.gz",
        "https://files.example/packages/ab/",
    ],
)
def test_an_unsafe_file_url_has_no_local_path(url: str) -> None:
    with pytest.raises(UnsafePath):
        layout.release_path(url)


def test_a_file_url_maps_below_web_packages() -> None:
    assert layout.release_path("https://files.example/packages/ab/cd/a%2Bb-1.0.tar.gz#sha256=00") == "web/packages/ab/cd/a+b-1.0.tar.gz"
    # a mirror served below a path prefix (or a root_uri with a path)
    assert layout.release_path("https://mirror.example/pypi/packages/ab/cd/x.whl") == "web/packages/ab/cd/x.whl"
    assert layout.metadata_path("web/packages/ab/x.whl") == "web/packages/ab/x.whl.metadata"
    assert layout.simple_dir("foo", hash_index=True) == "web/simple/f/foo"
    assert layout.linked_path("../../packages/ab/x.whl#sha256=00") == "web/packages/ab/x.whl"
    assert layout.linked_path("https://elsewhere.example/x.whl") is None


@pytest.mark.parametrize("hash_index", ["false", "true"])
def test_the_pages_and_the_stored_document_reference_the_same_files(harness: MirrorHarness, hash_index: str) -> None:
    harness.configure({"hash-index": hash_index})
    harness.run()
    storage = FilesystemStorage(harness.dir)
    hashed = hash_index == "true"
    for canonical in harness.corpus.projects:
        from_document = layout.referenced_files(storage, canonical, hashed, stored_project(storage, canonical))
        from_json_page = layout.referenced_files(storage, canonical, hashed)
        assert {p: sha for p, (sha, _) in from_json_page.items()} == {p: sha for p, (sha, _) in from_document.items()}
        directory = layout.simple_dir(canonical, hashed)
        (harness.dir / directory / "index.v1_json").unlink()  # a mirror that writes HTML only
        from_html = layout.referenced_files(storage, canonical, hashed)
        assert {p: sha for p, (sha, _) in from_html.items()} == {p: sha for p, (sha, _) in from_document.items()}
        assert from_document and all(path.startswith("web/packages/") for path in from_document)
    assert {p.removeprefix("web/") for c in harness.corpus.projects for p in layout.referenced_files(
        storage, c, hashed, stored_project(storage, c))} == set(harness.expected_files())


def test_removing_a_project_removes_its_pypi_directory_unless_something_else_is_in_it(harness: MirrorHarness) -> None:
    harness.configure({"delete_missing_packages": "true", "max-removals": "2"})
    harness.corpus.add_file("doomed", "1.0", "doomed-1.0.tar.gz")
    harness.corpus.add_file("kept", "1.0", "kept-1.0.tar.gz")
    harness.run()
    doomed_files = [p for p in harness.package_files() if "doomed" in p]
    assert harness.web("pypi/doomed/json").is_symlink() and doomed_files
    (harness.web("pypi/kept") / "README").write_text("an operator's note")
    harness.corpus.delete_project("doomed")
    harness.corpus.delete_project("kept")
    assert harness.run().removed == 2
    assert not harness.web("pypi/doomed").exists() and not harness.web("json/doomed").exists()
    assert not [p for p in harness.package_files() if "doomed" in p]
    for path in doomed_files:  # nor the directories that held only its files
        assert not harness.web(path).parent.exists()
    assert not harness.web("pypi/kept/json").is_symlink() and (harness.web("pypi/kept") / "README").exists()


def test_delete_removes_a_dangling_json_link_and_a_project_without_a_document(harness: MirrorHarness) -> None:
    harness.run()
    harness.web("json/small").unlink()  # the link dangles now; its files come from the pages
    files = [p for p in harness.package_files() if "/small-" in p]
    assert files
    assert cli.main(["-c", str(harness.conf), "delete", "small"]) == 0
    assert not harness.web("pypi/small").exists() and not harness.web("simple/small").exists()
    assert not [p for p in harness.package_files() if "/small-" in p]


def test_a_project_whose_pages_are_gone_is_still_removed(harness: MirrorHarness) -> None:
    harness.run()
    shutil.rmtree(harness.web("simple/small"))
    assert cli.main(["-c", str(harness.conf), "delete", "small"]) == 0  # recorded, so known
    assert not harness.web("json/small").exists() and not harness.web("pypi/small").exists()
