"""Allow ``python -m bandersnatch_classic``."""

from .cli import main

raise SystemExit(main())
