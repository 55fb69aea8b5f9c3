"""The ``bandersnatch`` console script and ``python -m bandersnatch_classic``.

The signal handlers are installed here, before the command's modules (and requests) are
imported, so that SIGINT or SIGTERM at any moment ends the command with exit 130 and one
line, never a traceback or death by signal. Only the interpreter's own start-up comes
before this.
"""

import signal
import sys

from .errors import EXIT_INTERRUPTED  # errors.py imports nothing heavy


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM (systemd stopping the unit, kill) ends a command the way Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> int:
    """Run the command line; the exit status."""
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        try:
            from .cli import main as cli_main

            return cli_main()
        except KeyboardInterrupt:  # before the command's own handling, or during it
            sys.stderr.write("Interrupted; the next run resumes where this one stopped\n")
            return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second signal while saying so
        return EXIT_INTERRUPTED
    finally:
        # The status is decided: a signal from here on does not change it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    raise SystemExit(main())
