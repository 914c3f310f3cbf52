"""Shared entry point of the scripts: bad input gets one line on stderr, not a traceback."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from hydra.errors import HydraException

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, HydraException)
"""Errors about the user's files, settings or disk (NIRFormatError, WriteError, missing files,
invalid values, an override Hydra cannot apply); anything else is a bug and keeps its traceback."""


def count(text: str) -> int:
    """An ``argparse`` type: an integer >= 0 (e.g. ``--num-images``, where 0 means all)."""
    return _integer(text, 0)


def positive(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (e.g. ``--batch-size``)."""
    return _integer(text, 1)


def _integer(text: str, low: int) -> int:
    value = int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
    return value


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
        exit_with_one_line(error, "--debug shows the traceback")
    sys.exit(status or 0)


def exit_with_one_line(error: BaseException, how_to_see_more: str) -> NoReturn:
    """Print ``<script>: error: <error's message on one line> (<how_to_see_more>)`` on stderr and
    exit with status 1."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = " ".join(lines) or type(error).__name__
    print(f"{Path(sys.argv[0]).name}: error: {message} ({how_to_see_more})", file=sys.stderr)
    sys.exit(1)
