"""A signal at any moment ends the command with exit 130 and one line, never a traceback.

The command is stopped deterministically before its modules are loaded: a ``sitecustomize``
(on ``PYTHONPATH``, run by the interpreter at start-up) holds the import of
``bandersnatch_classic.cli`` until the test has sent the signal, and says on stderr when it
is holding. The signal therefore arrives while the command's imports are under way, the
moment a run from cron or a unit being stopped can meet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MirrorHarness

HOLD = '''
import sys

class _Hold:
    """Hold the first import of the command's module until stdin closes (or a signal)."""

    def find_spec(self, name, path=None, target=None):
        if name == "bandersnatch_classic.cli":
            sys.meta_path.remove(self)
            sys.stderr.write("holding the import\\n")
            sys.stderr.flush()
            sys.stdin.read()
        return None

sys.meta_path.insert(0, _Hold())
'''


def _entry(kind: str) -> list[str]:
    if kind == "console script":
        script = shutil.which("bandersnatch", path=str(Path(sys.executable).parent))
        if script is None:
            pytest.skip("the console script is not installed next to this interpreter")
        return [script]
    return [sys.executable, "-m", "bandersnatch_classic"]


@pytest.mark.parametrize("kind", ["console script", "python -m"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_command_starts_exits_130_without_a_traceback(
    harness: MirrorHarness, tmp_path: Path, kind: str, signum: int
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD)
    env = {**os.environ, "PYTHONPATH": str(hook)}
    proc = subprocess.Popen(
        [*_entry(kind), "-c", str(harness.conf), "mirror"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdin is not None
        assert proc.stderr.readline() == "holding the import\n"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [
        "Interrupted; the next run resumes where this one stopped"
    ], stderr
    assert not (harness.dir / "web").exists()
