"""Shared entry point of the scripts: bad input gets one line on stderr, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
"""Errors about the user's files, settings or disk (NIRFormatError, WriteError, missing files,
invalid values); anything else is a bug and keeps its traceback."""


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Exit with ``main(argv)``'s status; a user error prints ``<script>: error: ...`` and exits 1.

    ``--debug`` anywhere on the command line is removed before ``main`` sees it and shows the
    full traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    try:
        status = main(args)
    except USER_ERRORS as error:
        if debug:
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = " ".join(lines) or type(error).__name__
        print(f"{Path(sys.argv[0]).name}: error: {message} (--debug shows the traceback)",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    sys.exit(status or 0)
