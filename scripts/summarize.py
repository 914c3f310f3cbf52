"""Compare runs: a markdown table and PNG plots from local run directories (no W&B needed).

python scripts/summarize.py logs/train/multiruns/2026-11-25_10-00-00
python scripts/summarize.py logs/train/runs/RUN --out reports/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from neurocuda.reporting.sweep_summary import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run dir or a sweep dir holding run dirs")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: directory)")
    args = parser.parse_args()
    files = summarize(args.directory, args.out)
    console = Console()
    console.print(Markdown(files["table"].read_text()))
    for name, path in files.items():
        console.print(f"{name}: {path}")


if __name__ == "__main__":
    main()
