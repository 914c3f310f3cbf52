"""Import our NIR graphs into third-party SNN libraries and compare them with our native SNN.

    python scripts/interop_matrix.py [--importers spikingjelly sinabs norse snntorch]
        [--timesteps 4] [--images 4] [--checkpoint CKPT] [--v-init 0.5]
        [--out docs/interop_matrix.md]

Each importer runs in its own venv under ``.cache/interop/<importer>`` (created on first use, with
the nir / nirtorch versions that importer needs) through ``scripts/interop_runner.py`` in a
subprocess of its own (process group, timeout); the graph goes over as a ``.nir`` file, images
and outputs as ``.npy``. One failing importer only fills its own rows. Profiles:

- ``faithful``: soft-reset model, ``export(profile="faithful")`` (I + Threshold + recurrent Scale).
- ``portable``: hard-reset model (``conversion.reset=zero``), ``export(profile="portable")``.
- ``portable-reduced``: the portable file with each ``Scale(theta)`` folded into the next weighted
  layer and the output integrator ``I`` removed (the runner sums the outputs over time), so that
  importers without ``Scale``/``I`` mappings can run it; compared with our executor on that file.
- ``portable-reduced-ulp``: the same with each IF threshold raised by one float32 ulp, so that
  importers firing on ``v >= threshold`` compute NIR's ``v > threshold``; same reference.

The first two are compared with the native ``SpikingModel``; max abs diff is over the whole output
trace ``[T, B, classes]``, agreement is on ``argmax`` after T steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata as metadata
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import nir
import numpy as np
import torch
from packaging.requirements import Requirement
from rich.console import Console
from rich.table import Table

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.files import atomic_write_text
from neurocuda.models import build_model
from neurocuda.nir import Executor, export, save
from neurocuda.nir.interop import run_with_nirtorch

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "interop_runner.py"
ENV_ROOT = ROOT / ".cache" / "interop"
TORCH_OVERLAY = ENV_ROOT / "torch-overlay"
SHARED_WITH_VENV = {"pip", "setuptools", "wheel"}  # each venv keeps its own installer tools

IMPORTERS: dict[str, tuple[str, ...]] = {
    # spikingjelly 2.0 imports nirtorch without declaring it and reads nir >= 1.0.6 IF fields.
    "spikingjelly": ("spikingjelly==2.0.0", "nir>=1.0.6", "nirtorch>=2.0.5"),
    "sinabs": ("sinabs==3.1.3",),  # pins nir <= 1.0.4 itself
    "norse": ("norse==1.1.0",),
    # snntorch's NIR support needs these (its README), it does not require them.
    "snntorch": ("snntorch==1.0.0", "nir>=1.0.6", "nirtorch>=2.0.5"),
}
# Semantic differences read in each importer's source, reported when its output is not identical.
FIRES_ON_GE = "fires on v >= threshold (NIR: >)"  # neutralized by the ``-ulp`` profile
KNOWN_DIFFERENCES: dict[str, tuple[str, ...]] = {
    "spikingjelly": ("its IFNode starts at v = v_reset (-v_init here), NIR's IF at 0", FIRES_ON_GE),
    "sinabs": ("multi-spike subtract reset, ignores v_reset", FIRES_ON_GE),
    "norse": ("IAF resets to 0 (ignores v_reset)", "Flatten uses NIR's batch-free dims on batches"),
    "snntorch": ("IF imported as Leaky(beta=0.9), a leak NIR's IF does not have",),
}
PROFILES = ("faithful", "portable", "portable-reduced", "portable-reduced-ulp")
HEADER = (
    "importer",
    "profile",
    "runs?",
    "prediction agreement",
    "max abs diff",
    "why not identical",
)


@dataclasses.dataclass
class Row:
    importer: str
    profile: str
    runs: bool
    agreement: float | None = None
    max_abs_diff: float | None = None
    reason: str = "-"

    def cells(self) -> tuple[str, ...]:
        agreement = "-" if self.agreement is None else f"{self.agreement:.0%}"
        diff = "-" if self.max_abs_diff is None else f"{self.max_abs_diff:.3g}"
        return (
            self.importer,
            self.profile,
            "yes" if self.runs else "no",
            agreement,
            diff,
            self.reason,
        )


# ----------------------------------------------------------------------------- environments


def _torch_distributions() -> list[metadata.Distribution]:
    """This venv's torch and every distribution it requires (extras included), by metadata."""
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [("torch", frozenset())]
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found or key in SHARED_WITH_VENV:
            continue
        try:
            found[key] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras | {""}]
            if requirement.marker is None or any(map(requirement.marker.evaluate, environments)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return list(found.values())


def build_torch_overlay() -> None:
    """Symlink our torch and its CUDA wheels (~5 GB) into one folder shared by the importer venvs.

    A venv cannot inherit packages from another venv, and installing torch four times costs 20 GB
    and minutes of unzipping; a ``.pth`` file in each importer venv puts this folder on its path,
    after its own site-packages, so pip sees torch as installed and the importer's pins still win.
    """
    TORCH_OVERLAY.mkdir(parents=True, exist_ok=True)
    for dist in _torch_distributions():
        base = Path(dist.locate_file(""))
        for top in {Path(str(file)).parts[0] for file in dist.files or []}:
            link = TORCH_OVERLAY / top
            if top not in ("..", "__pycache__") and not link.is_symlink():
                link.symlink_to(base / top)


def _pip_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed without output"])[0]


def ensure_env(importer: str, console: Console) -> tuple[Path | None, str]:
    """The importer venv's python (created and installed if needed) and a versions label.

    Returns ``(None, reason)`` when the venv cannot be built (pip's first error line).
    """
    venv = ENV_ROOT / importer
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    requirements = IMPORTERS[importer]
    build_torch_overlay()
    if not (python.exists() and stamp.exists() and stamp.read_text() == "\n".join(requirements)):
        console.print(
            f"[bold]{importer}[/]: creating {venv} and installing {' '.join(requirements)}"
        )
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(purelib, "neurocuda_torch_overlay.pth").write_text(f"{TORCH_OVERLAY}\n")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", *requirements],
            capture_output=True,
            text=True,
        )
        (venv / "pip.log").write_text(pip.stdout + pip.stderr)
        if pip.returncode != 0:
            return None, f"pip install failed: {_pip_error(pip.stdout + pip.stderr)}"
        stamp.write_text("\n".join(requirements))
    names = [Requirement(r).name for r in requirements[:1]] + ["nir", "nirtorch"]
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, importlib.metadata as m; print(*(m.version(n) for n in sys.argv[1:]))",
            *names,
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(versions) != len(names):
        return python, importer
    label = f"{importer} {versions[0]} (nir {versions[1]}, nirtorch {versions[2]})"
    return python, label


# ----------------------------------------------------------------------------- graphs


def reduce_portable(graph: nir.NIRGraph, threshold_up: bool = False) -> nir.NIRGraph:
    """Fold each uniform ``Scale`` into the next Conv2d/Affine/Linear and drop the output ``I``.

    The scale passes through AvgPool2d/Flatten (linear, per-neuron uniform scale commutes) and
    multiplies the weights, not the bias. Raises for per-channel scales (``per_channel=True``).
    ``threshold_up`` raises every IF threshold by one float32 ulp, so that an importer firing on
    ``v >= threshold`` computes NIR's ``v > threshold`` exactly.
    """
    nodes = dict(graph.nodes)
    edges = list(graph.edges)

    def successor(name: str) -> str:
        targets = [t for s, t in edges if s == name]
        if len(targets) != 1:
            raise ValueError(f"node {name!r} has {len(targets)} successors; reduce needs a chain")
        return targets[0]

    def bypass(name: str) -> None:
        sources = [s for s, t in edges if t == name]
        target = successor(name)
        edges[:] = [(s, t) for s, t in edges if name not in (s, t)]
        edges.extend((source, target) for source in sources)
        del nodes[name]

    for name, node in list(nodes.items()):
        if isinstance(node, nir.Scale):
            values = np.unique(node.scale)
            if values.size != 1:
                raise ValueError(f"Scale {name!r} is per channel; export with per_channel=false")
            target = successor(name)
            while isinstance(nodes[target], (nir.AvgPool2d, nir.Flatten)):
                target = successor(target)
            layer = nodes[target]
            if not isinstance(layer, (nir.Conv2d, nir.Affine, nir.Linear)):
                raise ValueError(f"cannot fold Scale {name!r} into {type(layer).__name__}")
            weight = (layer.weight * values[0]).astype(layer.weight.dtype)
            nodes[target] = dataclasses.replace(layer, weight=weight)
            bypass(name)
        elif isinstance(node, nir.I) and isinstance(nodes[successor(name)], nir.Output):
            bypass(name)
        elif isinstance(node, nir.IF) and threshold_up:
            threshold = np.asarray(node.v_threshold, dtype=np.float32)
            above = np.nextafter(threshold, np.float32(np.inf))
            nodes[name] = dataclasses.replace(node, v_threshold=above)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata))


def node_types(graph: nir.NIRGraph, prefix: str = "") -> dict[str, str]:
    """Node name -> NIR type, nested graphs included (under both their plain and dotted names)."""
    types: dict[str, str] = {}
    for name, node in graph.nodes.items():
        types.setdefault(name, type(node).__name__)
        types[prefix + name] = type(node).__name__
        if isinstance(node, nir.NIRGraph):
            types.update(node_types(node, f"{prefix}{name}."))
            for inner, kind in node_types(node).items():
                types.setdefault(inner, kind)
    return types


@dataclasses.dataclass
class Case:
    graph: nir.NIRGraph
    reference: np.ndarray


def build_cases(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Case], list[Row]]:
    """Images, the three graphs with their references, and our own executors' rows."""
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from neurocuda.training import ClassifierModule

        ann = ClassifierModule.load_from_checkpoint(args.checkpoint, map_location="cpu").net
    else:
        ann = build_model("cifarnet", widths=(8, 16, 16, 32))
        # Random init: with the final bias, every image gets the same argmax, so agreement would
        # not tell anything; without it the prediction depends on the image.
        torch.nn.init.zeros_(ann[-1].bias)
    images = torch.randn(args.images, 3, 32, 32)
    seq = images.expand(args.timesteps, *images.shape)
    cases: dict[str, Case] = {}
    rows: list[Row] = []
    for profile, reset in (("faithful", "subtract"), ("portable", "zero")):
        # one initial membrane for all neurons (--v-init): importers whose neurons start from a
        # scalar state can then be compared; the per-channel correction would rule them out
        config = ConversionConfig(
            reset=reset, calibration_batches=1, v_init=args.v_init, correction_timesteps=0
        )
        snn = convert(ann, [images], config)
        with torch.no_grad():
            native = snn(images, args.timesteps)
            graph = export(snn, images[:1], profile=profile)
            cases[profile] = Case(graph, native.numpy())
            rows.append(_compare("neurocuda Executor", profile, Executor(graph)(seq), native))
            nirtorch_out = run_with_nirtorch(graph, seq)
            label = f"nirtorch {metadata.version('nirtorch')} + our node map"
            rows.append(_compare(label, profile, nirtorch_out, native))
    reduced = reduce_portable(cases["portable"].graph)
    with torch.no_grad():
        reference = Executor(reduced)(seq).cumsum(0).numpy()
    cases["portable-reduced"] = Case(reduced, reference)
    # Same reference: firing on v >= (threshold + 1 ulp) is NIR's v > threshold.
    cases["portable-reduced-ulp"] = Case(
        reduce_portable(cases["portable"].graph, threshold_up=True), reference
    )
    return images.numpy(), cases, rows


def _compare(importer: str, profile: str, out: torch.Tensor, ref: torch.Tensor) -> Row:
    out, ref = np.asarray(out, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    if out.shape != ref.shape:
        reason = f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
        return Row(importer, profile, True, reason=reason)
    agreement = float(np.mean(out[-1].argmax(-1) == ref[-1].argmax(-1)))
    return Row(importer, profile, True, agreement, float(np.abs(out - ref).max()))


# ----------------------------------------------------------------------------- running


def classify_error(error: str, types: dict[str, str], versions: str) -> str:
    """A short cause for an importer's error line, naming the NIR node type where possible."""
    unknown = re.search(r"Unknown node type <class '[\w.]*\.(\w+)'>", error)
    missing_key = re.fullmatch(r"KeyError: '([^']+)'", error)
    keyword = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", error)
    if unknown:
        cause = f"no mapping for `{unknown.group(1)}`"
    elif missing_key and missing_key.group(1) in types:
        name = missing_key.group(1)
        cause = f"no mapping for `{types[name]}` (node `{name}`)"
    elif keyword:
        nir_version = re.search(r"nir ([\d.]+)", versions)
        reader = f"nir {nir_version.group(1)}" if nir_version else "its nir"
        cause = f"{reader} cannot read `{keyword.group(1)}.{keyword.group(2)}` (nir >= 1.0.6 file)"
    elif re.search(r"invalid combination of arguments - got \(tuple", error):
        cause = "a neuron's `(spikes, state)` tuple is passed to the next layer (IF chain)"
    else:
        return f"`{_excerpt(error, 120)}`"
    return f"{cause}; `{_excerpt(error, 60)}`"


def _excerpt(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_importer(
    python: Path, importer: str, profile: str, workdir: Path, args: argparse.Namespace
) -> tuple[np.ndarray | None, str]:
    """Run the importer on ``workdir/<profile>.nir`` in a process group of its own.

    Returns ``(output, "")`` or ``(None, error line)``.
    """
    graph_file = workdir / f"{profile}.nir"
    out_file = workdir / f"{importer}-{profile}.npy"
    command = [str(python), str(RUNNER), importer, str(graph_file), str(workdir / "images.npy")]
    command += [str(args.timesteps), str(out_file)]
    command += ["--running-sum"] if profile.startswith("portable-reduced") else []
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"TimeoutError: no result within {args.timeout:.0f} s"
    if process.returncode == 0 and out_file.exists():
        return np.load(out_file), ""
    errors = [line[len("ERROR: ") :] for line in output.splitlines() if line.startswith("ERROR: ")]
    tail = output.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
    return None, (errors or tail)[-1]


def importer_rows(
    importer: str, cases: dict[str, Case], workdir: Path, args: argparse.Namespace, console: Console
) -> list[Row]:
    python, label = ensure_env(importer, console)
    if python is None:
        return [Row(importer, profile, False, reason=label) for profile in PROFILES]
    rows = []
    for profile, case in cases.items():
        out, error = run_importer(python, importer, profile, workdir, args)
        if out is None:
            reason = classify_error(error, node_types(case.graph), label)
            rows.append(Row(label, profile, False, reason=reason))
            continue
        row = _compare(label, profile, out, case.reference)
        if row.max_abs_diff not in (None, 0.0):
            causes = KNOWN_DIFFERENCES[importer]
            if profile.endswith("ulp"):
                causes = tuple(cause for cause in causes if cause is not FIRES_ON_GE)
            row.reason = "; ".join(causes)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report


def markdown_table(rows: list[Row]) -> str:
    """The rows as a GitHub markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = (cell.replace("|", "\\|") for cell in row.cells())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(rows: list[Row], args: argparse.Namespace) -> str:
    model = args.checkpoint or "random-init cifarnet, widths (8, 16, 16, 32), final bias zeroed"
    return (
        "# NIR interop matrix (generated by `scripts/interop_matrix.py`)\n\n"
        f"Model: {model}; v_init = {args.v_init} theta; {args.images} random images (seed "
        f"{args.seed}) as constant input current for T = {args.timesteps} steps; ReLU thresholds "
        "calibrated on those images.\n"
        "`portable-reduced` = the portable file with `Scale` folded into the next layer's weights "
        "and the output `I` replaced by a running sum in the runner, compared with our executor "
        "on that file; `portable-reduced-ulp`: the same with every IF threshold raised by one "
        "float32 ulp (so `v >= threshold` computes NIR's `v > threshold`), same reference.\n\n"
        + markdown_table(rows)
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--importers", nargs="+", choices=sorted(IMPORTERS), default=[*IMPORTERS])
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path, help="a trained ClassifierModule checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--v-init", type=float, default=0.5, help="initial membrane / theta")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per importer run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "interop_matrix.md")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    console = Console()
    images, cases, rows = build_cases(args)
    with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "images.npy", images)
        for profile, case in cases.items():
            save(case.graph, workdir / f"{profile}.nir")
        for importer in args.importers:
            rows += importer_rows(importer, cases, workdir, args, console)
    table = Table(*HEADER, title="NIR interop", show_lines=True)
    for row in rows:
        table.add_row(*row.cells())
    console.print(table)
    atomic_write_text(args.out, report(rows, args))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
