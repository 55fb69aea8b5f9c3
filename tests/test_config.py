"""Reading and validating the configuration file."""

import logging
from pathlib import Path

import pytest

from bandersnatch_classic import config
from bandersnatch_classic.errors import ConfigError


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bandersnatch.conf"
    path.write_text(body)
    return path


def load(tmp_path: Path, mirror_lines: str, extra: str = "") -> config.MirrorConfig:
    body = f"[mirror]\ndirectory = {tmp_path / 'm'}\nmaster = https://index.example\n{mirror_lines}\n{extra}"
    return config.load(write(tmp_path, body)).mirror


def test_defaults(tmp_path):
    m = load(tmp_path, "")
    assert m.directory == tmp_path / "m"
    assert (m.workers, m.timeout, m.global_timeout) == (3, 10.0, 1800.0)
    assert (m.simple_format, m.compare_method, m.digest_name, m.api_method) == ("ALL", "hash", "sha256", "auto")
    assert m.release_files and m.core_metadata and not m.json and not m.hash_index
    assert m.storage_filesystem_manage_permissions and not m.allow_non_https


def test_every_key_is_read(tmp_path):
    m = load(
        tmp_path,
        "workers = 10\ntimeout = 2.5\nglobal-timeout = 60\nhash-index = true\nstop-on-error = yes\n"
        "json = true\nrelease-files = false\ncore-metadata = off\nsimple-format = json\n"
        "compare-method = stat\ndigest_name = md5\nroot_uri = https://m.example/\n"
        "diff-file = /tmp/x\ndiff-append-epoch = true\ncleanup_todo = true\n"
        "delete_missing_packages = true\nproxy = http://proxy:3128\n"
        "download-mirror = https://files.example\ndownload-mirror-no-fallback = true\n"
        "api-method = simple\nstorage-filesystem-manage-permissions = false\n",
    )
    assert m.workers == 10 and m.timeout == 2.5 and m.global_timeout == 60
    assert m.hash_index and m.stop_on_error and m.json and not m.release_files and not m.core_metadata
    assert m.simple_format == "JSON" and not m.write_html and m.write_json
    assert (m.compare_method, m.digest_name, m.root_uri) == ("stat", "md5", "https://m.example")
    assert m.diff_file == "/tmp/x" and m.diff_append_epoch and m.cleanup_todo and m.delete_missing_packages
    assert m.proxy == "http://proxy:3128" and m.download_mirror == "https://files.example"
    assert m.download_mirror_no_fallback and m.api_method == "simple"
    assert not m.storage_filesystem_manage_permissions


@pytest.mark.parametrize(
    "line, words",
    [
        ("workers = many", ["workers", "'many'", "whole number from 1 to 64"]),
        ("workers = 0", ["workers", "'0'", "from 1 to 64"]),
        ("workers = 65", ["workers", "'65'"]),
        ("timeout = -1", ["timeout", "'-1'"]),
        ("simple-format = XML", ["simple-format", "'XML'", "ALL, HTML, JSON"]),
        ("compare-method = mtime", ["compare-method", "hash, stat"]),
        ("api-method = soap", ["api-method", "auto, xmlrpc, simple, html"]),
        ("json = maybe", ["json", "'maybe'", "true or false"]),
        ("storage-backend = gcs", ["storage-backend", "filesystem, s3"]),
    ],
)
def test_bad_values_name_key_value_and_choices(tmp_path, line, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, line)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "body, words",
    [
        ("[mirror]\nmaster = https://i.example\n", ["directory", "required"]),
        ("[mirror]\ndirectory = relative/dir\nmaster = https://i.example\n", ["directory", "'relative/dir'", "absolute"]),
        ("[mirror]\ndirectory = /m\nmaster = ftp://i.example\n", ["master", "'ftp://i.example'", "http(s)"]),
        ("[mirror]\ndirectory = /m\nmaster = http://i.example\n", ["master", "allow-non-https"]),
        ("[mirror]\ndirectory = /m\ndownload-mirror = http://f.example\nmaster = https://i.example\n", ["download-mirror"]),
        ("[other]\nx = 1\n", ["no [mirror] section"]),
        ("not an ini file\n", ["not valid INI"]),
    ],
)
def test_bad_files(tmp_path, body, words):
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, body))
    for word in words:
        assert word in str(info.value)


def test_plain_http_allowed_when_asked(tmp_path):
    body = f"[mirror]\ndirectory = {tmp_path}\nmaster = http://127.0.0.1:1\nallow-non-https = true\n"
    assert config.load(write(tmp_path, body)).mirror.master == "http://127.0.0.1:1"


def test_directory_expands_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_BASE", str(tmp_path))
    body = "[mirror]\ndirectory = $MIRROR_BASE/mirror\nmaster = https://i.example\n"
    assert config.load(write(tmp_path, body)).mirror.directory == tmp_path / "mirror"


def test_unknown_keys_and_sections_warn(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    load(tmp_path, "wokers = 3", extra="[mystery]\na = b\n")
    text = caplog.text
    assert "'wokers'" in text and str(tmp_path / "bandersnatch.conf") in text
    assert "[mystery]" in text


def test_default_master_is_pips_default(tmp_path):
    from pip._internal.models.index import PyPI

    body = f"[mirror]\ndirectory = {tmp_path}\n"
    assert config.load(write(tmp_path, body)).mirror.master == PyPI.url.rstrip("/")


def test_shipped_default_config_is_the_example():
    example = Path(__file__).parent.parent / "examples" / "bandersnatch.conf"
    assert config.default_config_text() == example.read_text()


def test_shipped_default_config_loads(tmp_path):
    text = config.default_config_text().replace("/srv/pypi", str(tmp_path))
    loaded = config.load(write(tmp_path, text))
    assert loaded.mirror.directory == tmp_path
