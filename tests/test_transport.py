"""The transport behaves as a requests user expects: proxies, the environment, .netrc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import MirrorHarness
from .test_mirror import assert_mirror_equals_upstream

#: A host name that cannot resolve: a run only works if it goes through the proxy.
UNREACHABLE = "http://index.invalid"


def _cli(harness: MirrorHarness, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "bandersnatch_classic", "-c", str(harness.conf), "mirror"],
        capture_output=True, text=True, timeout=120, env={**clean, **env}, stdin=subprocess.DEVNULL,
    )


def test_the_configured_proxy_carries_every_request(harness: MirrorHarness) -> None:
    harness.configure({"master": UNREACHABLE, "proxy": harness.upstream.url})
    report = harness.run()
    assert report.exit_code == 0, report.failed
    assert harness.upstream.proxied_requests == len(harness.upstream.requests) > 0
    assert_mirror_equals_upstream(harness)


def test_the_environment_proxy_is_used_and_no_proxy_respected(harness: MirrorHarness) -> None:
    harness.configure({"master": UNREACHABLE})
    done = _cli(harness, {"http_proxy": harness.upstream.url})
    assert done.returncode == 0, done.stderr
    assert harness.upstream.proxied_requests == len(harness.upstream.requests) > 0

    # NO_PROXY for the upstream's own address: asked directly, the proxy is not used.
    harness.configure({"master": harness.upstream.url})
    harness.upstream.clear()
    harness.upstream.proxied_requests = 0
    done = _cli(harness, {"http_proxy": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    assert harness.upstream.proxied_requests == 0 and harness.upstream.requests


def test_credentials_come_from_netrc(harness: MirrorHarness, tmp_path: Path) -> None:
    harness.upstream.credentials = ("mirror", "s3cret")
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login mirror password s3cret\n")
    netrc.chmod(0o600)

    refused = _cli(harness, {"HOME": str(home / "elsewhere"), "NO_PROXY": "127.0.0.1"})
    assert refused.returncode != 0
    assert "401" in refused.stderr

    done = _cli(harness, {"HOME": str(home), "NO_PROXY": "127.0.0.1"})
    assert done.returncode == 0, done.stderr
    assert_mirror_equals_upstream(harness)


def test_redirected_files_are_followed(harness: MirrorHarness) -> None:
    harness.upstream.redirect_files = True
    report = harness.run()
    assert report.exit_code == 0, report.failed
    cdn = [p for _m, p in harness.upstream.requests if p.startswith("/cdn/packages/")]
    assert cdn and len(cdn) == len(harness.expected_files())
    redirected = [p for _m, p in harness.upstream.requests if p.startswith("/packages/")]
    assert sorted(redirected) == sorted(p.removeprefix("/cdn") for p in cdn)  # each asked once
    assert_mirror_equals_upstream(harness)
