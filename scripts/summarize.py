"""Compare runs: a markdown table and PNG plots from local run directories (no W&B needed).

python scripts/summarize.py logs/train/multiruns/2026-11-25_10-00-00
python scripts/summarize.py logs/train/runs/RUN --out reports/
python scripts/summarize.py logs/ft/run_a logs/ft/run_b --out reports/   # runs side by side

Runs that differ only in ``seed`` or ``data.shuffle_seed`` are replicates: the table gives each such
arm of two or more runs a row of means +- standard deviations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from neurocuda.cli import run_cli
from neurocuda.reporting.sweep_summary import summarize


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "directories", type=Path, nargs="+", help="run dirs or sweep dirs holding run dirs"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default: the one directory)"
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; name a directory for the table and plots.")
    files = summarize(args.directories, args.out)  # no runs there, several dirs without --out:
    console = Console()  # one line (run_cli)
    console.print(Markdown(files["table"].read_text()))
    for name, path in files.items():
        console.print(f"{name}: {path}")


if __name__ == "__main__":
    run_cli(main)
