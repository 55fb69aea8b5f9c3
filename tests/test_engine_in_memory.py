"""The engine's own logic with no sockets and no files: a memory upstream into a memory storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from bandersnatch_classic import config as configuration, layout
from bandersnatch_classic.errors import UnsafeListing
from bandersnatch_classic.filters import FilterSet
from bandersnatch_classic.sync import Mirror

from .memory_upstream import MemoryUpstream
from .test_storage_interface import MemoryStorage
from .upstream import Corpus, standard_corpus


class Engine:
    """A corpus, its memory upstream, a memory storage, and a config to run mirrors with."""

    def __init__(self, tmp_path: Path, corpus: Corpus) -> None:
        self.conf = tmp_path / "bandersnatch.conf"
        self.upstream = MemoryUpstream(corpus)
        self.storage = MemoryStorage()
        self.keys = {"directory": str(tmp_path / "mirror"), "master": self.upstream.master, "workers": "3", "json": "true"}

    def mirror(self, **keys: str) -> Mirror:
        self.keys.update(keys)
        self.conf.write_text("[mirror]\n" + "".join(f"{k} = {v}\n" for k, v in self.keys.items()))
        loaded = configuration.load(self.conf)
        return Mirror(loaded.mirror, self.upstream, self.storage, FilterSet.from_config(loaded.parser))  # type: ignore[arg-type]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path, standard_corpus())


def test_a_full_run_then_a_run_with_nothing_to_do(engine: Engine) -> None:
    corpus = engine.upstream.corpus
    report = engine.mirror().run()
    assert report.exit_code == 0 and report.synced == len(corpus.projects)
    for path, file in corpus.files().items():
        local = layout.release_path(engine.upstream.master + path)
        assert engine.storage.blobs[local] == file.content
    assert engine.storage.read_text("status") == str(corpus.serial)
    for canonical in corpus.projects:
        assert engine.storage.is_link(layout.pypi_json_link(canonical))
    engine.upstream.asked.clear()
    again = engine.mirror().run()
    assert again.synced == 0 and engine.upstream.asked == []


def test_removals_beyond_max_removals_wait_for_an_operator(engine: Engine) -> None:
    corpus = engine.upstream.corpus
    for name in ("gone-a", "gone-b", "gone-c"):
        corpus.add_file(name, "1.0", f"{name.replace('-', '_')}-1.0.tar.gz")
    assert engine.mirror().run().exit_code == 0
    for name in ("gone-a", "gone-b", "gone-c"):
        corpus.delete_project(name)
    mirror = engine.mirror(**{"max-removals": "1"})
    with pytest.raises(UnsafeListing):
        mirror.run()
    assert mirror.report.removed == 1
    left = [name for name in ("gone-a", "gone-b", "gone-c") if layout.is_mirrored(engine.storage, name, False)]
    todo = engine.storage.read_text("todo") or ""
    assert len(left) == 2 and all(name in todo for name in left)
    assert engine.mirror().run(allow_mass_removal=True).removed == 2
    # pages and JSON documents gone (the release files stay: delete_missing_packages = false)
    assert not [key for key in engine.storage.blobs if "gone-" in key] and engine.storage.read_text("todo") is None
