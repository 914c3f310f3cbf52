"""Deploy a ``.nir`` file on a target and write the report, outside training.

    python scripts/deploy.py FILE.nir deploy=loihi2 [data=cifar10_subset data.test_subset=500 ...]
    python scripts/deploy.py FILE.nir deploy=cpu deploy.timesteps=16 --out reports/

Takes the project's Hydra configs (``configs/train.yaml``; any override works) for the data module
and the ``deploy`` group, runs the same library call as the Deployment callback, writes
``deploy_<target>.{json,md,png}`` into ``--out`` (default: ``<FILE>_deploy/`` beside the file) and
prints the run summary train.py prints for its deployment (also ``summary.json`` in ``--out``).
Errors (a malformed file, a full disk) print one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import hydra

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurocuda.cli import run_cli  # noqa: E402
from neurocuda.data.calibration import calibration_loader  # noqa: E402
from neurocuda.deploy.base import load_graph  # noqa: E402
from neurocuda.deploy.report import summarize  # noqa: E402
from neurocuda.deploy.run import run_deployment  # noqa: E402
from neurocuda.reporting.run_summary import RunSummary, report_summary  # noqa: E402
from neurocuda.training.compose import compose_train_config  # noqa: E402
from neurocuda.training.settings import validate_run_settings  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("nir_file", type=Path, help="exported graph (.nir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. deploy=loihi2")
    parser.add_argument("--out", type=Path, default=None, help="report directory")
    args = parser.parse_args(argv)
    if not args.nir_file.is_file():
        parser.error(f"{args.nir_file} does not exist; export one with scripts/convert.py.")
    out = args.out or args.nir_file.with_name(args.nir_file.stem + "_deploy")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder for the reports.")
    overrides = list(args.overrides)
    if not any(o.startswith("deploy=") for o in overrides):
        overrides.append("deploy=loihi2")
    cfg = compose_train_config(overrides, args.nir_file.parent)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_run_settings(cfg)  # bad settings and a bad file fail here, before the data loads
    graph = load_graph(args.nir_file)
    deploy_cfg = cfg.deploy
    backend = hydra.utils.instantiate(deploy_cfg.backend)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    report, paths = run_deployment(
        graph,
        backend,
        datamodule.test_dataloader(),
        int(deploy_cfg.timesteps),
        out,
        deploy_cfg.max_images,
        int(deploy_cfg.calibration_batches),
        source=str(args.nir_file),
        calibration=calibration_loader(datamodule),
    )
    report_summary(RunSummary(run_dir=str(out), deployment=summarize(report, paths["markdown"])))


if __name__ == "__main__":
    run_cli(main)
