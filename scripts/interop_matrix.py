"""Run our NIR export profiles in third-party SNN libraries and compare them with our executor.

    python scripts/interop_matrix.py [--checkpoints CKPT ...] [--images 64] [--timesteps 8]
        [--importers spikingjelly snntorch norse sinabs spyx rockpool] [--venvs DIR]
        [--out docs/interop_matrix.md] [--install-only]

Each importer runs in a venv of its own (``DIR/<importer>``, default ``.cache/interop`` or
``$NEUROCUDA_INTEROP_VENVS``; created on first use with the pinned release below; torch is not
reinstalled but shared from this venv through a ``.pth`` overlay, ``build_torch_overlay``) through
``scripts/interop_runner.py`` in a subprocess (process group, timeout); graphs go over as ``.nir``
files, inputs and outputs as ``.npy``. ``--install-only`` only builds the venvs.

For each model (a checkpoint converted with the default settings, once with reset by subtraction
and once with ``reset=zero``; without checkpoints a random-init cifarnet) and each export profile,
the input (the first ``--images`` test images as a constant current for T steps, with the
profile's indicator channel, ``InputSignature``) is run by our ``Executor`` and by each importer.
A row gives prediction agreement (argmax after T steps) and max abs diff of the integrated output
trace ``[T, B, classes]`` against our Executor on the same file and against the native
``SpikingModel`` (soft or hard reset, as the profile's model).
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
import warnings
from pathlib import Path

import nir
import numpy as np
import torch
from packaging.requirements import Requirement
from rich.console import Console
from rich.table import Table

from neurocuda.cli import positive, run_cli
from neurocuda.conversion import ConversionConfig, convert
from neurocuda.files import atomic_write_text, verify_checkpoint
from neurocuda.models import build_model
from neurocuda.nir import Executor, export, load, save
from neurocuda.nir.interop import run_with_nirtorch
from neurocuda.nir.metadata import InputSignature
from neurocuda.nir.portable import RESET_OF_PROFILE

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "interop_runner.py"
DEFAULT_VENVS = Path(os.environ.get("NEUROCUDA_INTEROP_VENVS", ROOT / ".cache" / "interop"))
SHARED_WITH_VENV = {"pip", "setuptools", "wheel"}  # each venv keeps its own installer tools

IMPORTERS: dict[str, tuple[str, ...]] = {
    # spikingjelly and snntorch import nir / nirtorch without declaring them.
    "spikingjelly": ("spikingjelly==2.0.0", "nir>=1.0.6", "nirtorch>=2.0.5"),
    "snntorch": ("snntorch==1.0.0", "nir>=1.0.6", "nirtorch>=2.0.5"),
    "norse": ("norse==1.1.0",),
    "sinabs": ("sinabs==3.1.3",),  # pins nir <= 1.0.4 itself
    "spyx": ("spyx==1.0.0",),
    "rockpool": ("rockpool==3.1.0", "nir", "nirtorch"),
}
# Profiles each importer is given: its own variant first, then the generic portable ones.
PROFILES_OF: dict[str, tuple[str, ...]] = {
    "spikingjelly": ("spikingjelly", "portable-hard"),
    "snntorch": ("snntorch", "portable-hard"),
    "norse": ("norse", "portable-soft", "portable-hard"),
    "sinabs": ("sinabs", "portable-soft", "portable-hard"),
    "spyx": ("portable-soft", "portable-hard"),
    "rockpool": ("portable-hard",),
}
OUR_PROFILES = (
    "faithful",
    "portable",
    "portable-soft",
    "portable-hard",
    "spikingjelly",
    "snntorch",
    "norse",
    "sinabs",
)
# Our own profiles are checked against the native runtime, so the executor runs them in its memory
# layout (neurocuda.snn.layout); the files for other tools in the standard layout those compute in
# (on CPU a convolution rounds differently by layout).
NATIVE_PROFILES = ("faithful", "portable")
# Semantic differences read in each importer's source, given when its output is not identical.
KNOWN_DIFFERENCES: dict[str, str] = {
    "spikingjelly": "IFNode fires on v >= threshold (NIR: >)",
    "snntorch": "Leaky(beta=1) computes mem + x; our LIF step at dt = 1e-4 rounds differently "
    "only when x is tiny",
    "norse": "IF imported as IAF (reset to 0, no reset_method)",
    "sinabs": "IAF emits several spikes per step and floors v at -threshold",
    "spyx": "fires on the previous step's membrane; unmapped nodes are dropped",
    "rockpool": "no Conv2d/IF import",
}
# Profiles whose file means another model than the native one (said in their rows vs native).
PROFILE_NOTES: dict[str, str] = {
    "sinabs": "compared with our Executor reading sinabs' semantics (convention sinabs); vs "
    "native: several spikes per step and v floored at -threshold are sinabs' model",
}
# Import side: how we run each producer's files (dt, Executor convention), and why (its source).
PRODUCED: dict[str, tuple[float, str, str]] = {
    "spikingjelly": (
        1.0,
        "spikingjelly",
        "IFNode fires on v >= v_threshold and resets to v_reset; its exporter writes r = 1 / dt",
    ),
    "snntorch": (
        1e-4,
        "snntorch",
        "Leaky subtracts one step later, undecayed; its exporter writes LIF for dt = 1e-4",
    ),
    "norse": (
        1e-6,
        "nir",
        "norse 1.1 writes tau = dt / tau_mem_inv (= dt * tau, dt = 1e-3): run at dt = 1e-3 ** 2",
    ),
    "sinabs": (1.0, "sinabs", "IAF: several spikes per step, subtract, v floored at -threshold"),
    "rockpool": (1e-3, "nir", "LIFTorch is not NIR's Euler CubaLIF (see docs/interop.md)"),
}
IMPORT_HEADER = (
    "producer",
    "network",
    "loads?",
    "dt, convention",
    "identical spikes",
    "spikes (producer / ours)",
    "notes",
)
HEADER = (
    "model",
    "importer",
    "profile",
    "runs?",
    "agreement vs Executor",
    "max abs diff vs Executor",
    "agreement vs native",
    "max abs diff vs native",
    "why not identical",
)


@dataclasses.dataclass
class Row:
    model: str
    importer: str
    profile: str
    runs: bool
    agreement: float | None = None
    max_abs_diff: float | None = None
    native_agreement: float | None = None
    native_max_abs_diff: float | None = None
    reason: str = "-"

    def cells(self) -> tuple[str, ...]:
        def share(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        def diff(value: float | None) -> str:
            return "-" if value is None else f"{value:.3g}"

        return (
            self.model,
            self.importer,
            self.profile,
            "yes" if self.runs else "no",
            share(self.agreement),
            diff(self.max_abs_diff),
            share(self.native_agreement),
            diff(self.native_max_abs_diff),
            self.reason,
        )


def _compare(out: np.ndarray, ref: np.ndarray) -> tuple[float | None, float | None]:
    """(argmax agreement after the last step, max abs diff) of two ``[T, B, classes]`` traces."""
    out, ref = np.asarray(out, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    if out.shape != ref.shape:
        return None, None
    agreement = float(np.mean(out[-1].argmax(-1) == ref[-1].argmax(-1)))
    return agreement, float(np.abs(out - ref).max())


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


def build_torch_overlay(overlay: Path) -> None:
    """Symlink our torch and its CUDA wheels (~5 GB) into one folder shared by the importer venvs.

    A venv cannot inherit packages from another venv, and installing torch four times costs 20 GB
    and minutes of unzipping; a ``.pth`` file in each importer venv puts this folder on its path,
    after its own site-packages, so pip sees torch as installed and the importer's pins still win.
    """
    overlay.mkdir(parents=True, exist_ok=True)
    for dist in _torch_distributions():
        base = Path(dist.locate_file(""))
        for top in {Path(str(file)).parts[0] for file in dist.files or []}:
            link = overlay / top
            if top not in ("..", "__pycache__") and not link.is_symlink():
                link.symlink_to(base / top)


def _pip_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed without output"])[0]


def ensure_env(importer: str, root: Path, console: Console) -> tuple[Path | None, str]:
    """The importer venv's python (``root/<importer>``, created and installed if needed) and a
    versions label. Returns ``(None, reason)`` when it cannot be built (pip's first error line).

    pip runs with a constraint ``torch==<ours>``: an importer that pins another torch fails to
    install, and that is its result (it would not run beside our model anyway).
    """
    venv = root / importer
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    requirements = IMPORTERS[importer]
    overlay = root / "torch-overlay"
    build_torch_overlay(overlay)
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
        Path(purelib, "neurocuda_torch_overlay.pth").write_text(f"{overlay}\n")
        constraints = venv / "constraints.txt"
        constraints.write_text(f"torch=={metadata.version('torch').split('+')[0]}\n")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-c", str(constraints), *requirements],
            capture_output=True,
            text=True,
        )
        (venv / "pip.log").write_text(pip.stdout + pip.stderr)
        if pip.returncode != 0:
            return None, f"pip install failed: {_pip_error(pip.stdout + pip.stderr)}"
        stamp.write_text("\n".join(requirements))
    names = [Requirement(r).name for r in requirements[:1]] + ["nir"]
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
    return python, f"{importer} {versions[0]} (nir {versions[1]})"


# ----------------------------------------------------------------------------- models and graphs


@dataclasses.dataclass
class Case:
    """One exported file: its input, our executor's and the native model's integrated outputs."""

    graph: nir.NIRGraph
    signature: InputSignature
    inputs: np.ndarray  # [T, B, C(+indicator), H, W]
    executor: np.ndarray
    native: np.ndarray


def load_model(checkpoint: Path | None, images: int, seed: int) -> tuple[str, object, torch.Tensor]:
    """(label, ANN, test images) for a checkpoint, or a random-init cifarnet on random images."""
    if checkpoint is None:
        torch.manual_seed(seed)
        ann = build_model("cifarnet", widths=(8, 16, 16, 32)).eval()
        # Random init: with the final bias, every image gets the same argmax, so agreement would
        # not tell anything; without it the prediction depends on the image.
        torch.nn.init.zeros_(ann[-1].bias)
        return "random-init cifarnet (8, 16, 16, 32)", ann, torch.randn(images, 3, 32, 32)
    from neurocuda.checkpoint import load_ann
    from neurocuda.data.from_checkpoint import datamodule_from_checkpoint

    datamodule = datamodule_from_checkpoint(checkpoint)
    datamodule.prepare_data()
    datamodule.setup("test")
    batches, count = [], 0
    for x, _ in datamodule.test_dataloader():
        batches.append(x)
        count += len(x)
        if count >= images:
            break
    label = f"{checkpoint.parent.parent.name} ({checkpoint.name})"
    return label, load_ann(checkpoint, "cpu"), torch.cat(batches)[:images]


def build_cases(
    ann: object, images: torch.Tensor, calibration: object, timesteps: int
) -> tuple[dict[str, Case | str], list[tuple[str, np.ndarray, np.ndarray]]]:
    """Every profile's case (or why the model cannot be exported so, e.g. a chain profile of a
    residual network), and (profile, nirtorch output, native) for our nirtorch node map."""
    cases: dict[str, Case | str] = {}
    seq = images.expand(timesteps, *images.shape)
    extra = []
    for reset in ("subtract", "zero"):
        snn = convert(ann, calibration, ConversionConfig(reset=reset))
        with torch.no_grad():
            native = snn(images, timesteps).numpy()
        for profile in OUR_PROFILES:
            if {"faithful": "subtract", "portable": "zero"}.get(profile) not in (None, reset):
                continue
            if profile in RESET_OF_PROFILE and RESET_OF_PROFILE[profile] != reset:
                continue
            try:
                graph = export(snn, images[:1], profile=profile)
            except ValueError as error:
                cases[profile] = f"not exported: {error}"
                continue
            signature = InputSignature.from_metadata(graph.metadata)
            inputs = signature.encode(seq)
            layout = None if profile in NATIVE_PROFILES else torch.contiguous_format
            executor = Executor(
                graph,
                dt=signature.dt,
                convention=signature.reset_convention,
                memory_format=layout,
            )
            with torch.no_grad():
                out = signature.integrate(executor(inputs)).numpy()
                if profile == "faithful":
                    extra.append((profile, run_with_nirtorch(graph, seq).numpy(), native))
            cases[profile] = Case(graph, signature, inputs.numpy(), out, native)
    return cases, extra


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
    python: Path, importer: str, profile: str, case: Case, workdir: Path, timeout: float
) -> tuple[np.ndarray | None, str]:
    """Run the importer on ``workdir/<profile>.nir`` in a process group of its own.

    Returns ``(integrated output, "")`` or ``(None, error line)``.
    """
    graph_file = workdir / f"{profile}.nir"
    out_file = workdir / f"{importer}-{profile}.npy"
    command = [str(python), str(RUNNER), importer, str(graph_file), str(workdir / f"{profile}.npy")]
    command += [str(out_file), "--dt", str(case.signature.dt)]
    command += ["--reset", case.signature.reset_convention]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None, f"TimeoutError: no result within {timeout:.0f} s"
    if process.returncode == 0 and out_file.exists():
        return case.signature.integrate(torch.from_numpy(np.load(out_file))).numpy(), ""
    errors = [line[len("ERROR: ") :] for line in output.splitlines() if line.startswith("ERROR: ")]
    tail = output.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
    return None, (errors or tail)[-1]


def importer_rows(
    importer: str,
    python: Path | None,
    label: str,
    model: str,
    cases: dict[str, Case | str],
    workdir: Path,
    timeout: float,
) -> list[Row]:
    """One row per profile the importer is given (``PROFILES_OF``)."""
    profiles = PROFILES_OF[importer]
    if python is None:
        return [Row(model, importer, profile, False, reason=label) for profile in profiles]
    rows = []
    for profile in profiles:
        case = cases[profile]
        if isinstance(case, str):
            rows.append(Row(model, label, profile, False, reason=_excerpt(case, 160)))
            continue
        out, error = run_importer(python, importer, profile, case, workdir, timeout)
        if out is None:
            reason = classify_error(error, node_types(case.graph), label)
            rows.append(Row(model, label, profile, False, reason=reason))
            continue
        agreement, diff = _compare(out, case.executor)
        native_agreement, native_diff = _compare(out, case.native)
        row = Row(model, label, profile, True, agreement, diff, native_agreement, native_diff)
        if diff is None:
            row.reason = (
                f"output shape {out.shape}, expected {case.executor.shape}: "
                f"{KNOWN_DIFFERENCES[importer]}"
            )
        elif diff != 0.0:
            row.reason = KNOWN_DIFFERENCES[importer]
        elif profile in PROFILE_NOTES:
            row.reason = PROFILE_NOTES[profile]
        rows.append(row)
    return rows


def our_rows(model: str, cases: dict[str, Case | str], extra: list) -> list[Row]:
    rows = []
    for profile, case in cases.items():
        if isinstance(case, str):
            rows.append(Row(model, "neurocuda Executor", profile, False, reason=case))
            continue
        native_agreement, native_diff = _compare(case.executor, case.native)
        rows.append(
            Row(model, "neurocuda Executor", profile, True, 1.0, 0.0, native_agreement, native_diff)
        )
    for profile, out, native in extra:
        agreement, diff = _compare(out, cases[profile].executor)
        native_agreement, native_diff = _compare(out, native)
        label = f"nirtorch {metadata.version('nirtorch')} + our node map"
        rows.append(
            Row(model, label, profile, True, agreement, diff, native_agreement, native_diff)
        )
    return rows


# ----------------------------------------------------------------------------- import side


@dataclasses.dataclass
class ImportRow:
    producer: str
    loads: bool
    setting: str = "-"
    identical: float | None = None
    counts: str = "-"
    notes: str = "-"

    def cells(self) -> tuple[str, ...]:
        share = "-" if self.identical is None else f"{self.identical:.1%}"
        network = "Linear(5, 8) -> neuron -> Linear(8, 4) -> neuron"
        return (self.producer, network, "yes" if self.loads else "no", self.setting, share,
                self.counts, self.notes)  # fmt: skip


def import_row(
    producer: str, python: Path | None, label: str, workdir: Path, timeout: float, seed: int
) -> ImportRow:
    """Export a producer's small network in its venv, run the file in our Executor with the
    producer's convention (``PRODUCED``) and compare the output spikes with the producer's own."""
    if python is None:
        return ImportRow(producer, False, notes=label)
    rng = np.random.default_rng(seed)
    x = 4 * rng.random((20, 4, 5), dtype=np.float32)  # [T, B, features], most neurons fire
    graph_file, input_file = workdir / f"{producer}-own.nir", workdir / "produce-input.npy"
    out_file = workdir / f"{producer}-own.npy"
    np.save(input_file, x)
    command = [str(python), str(RUNNER), "--produce", producer, str(graph_file), str(input_file)]
    process = subprocess.run(
        [*command, str(out_file)], capture_output=True, text=True, timeout=timeout
    )
    if process.returncode != 0 or not out_file.exists():
        errors = [line for line in process.stdout.splitlines() if line.startswith("ERROR: ")]
        return ImportRow(label, False, notes=(errors or ["no output"])[-1])
    dt, convention, why = PRODUCED[producer]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = load(graph_file, strict=False)
        executor = Executor(graph, dt=dt, convention=convention)
        inputs = torch.from_numpy(x)
        if executor.input_shape is not None and np.prod(executor.input_shape) == x.shape[-1]:
            inputs = inputs.reshape(*x.shape[:2], *executor.input_shape)
        with torch.no_grad():
            ours = executor(inputs).reshape(*x.shape[:2], -1).numpy()
    theirs = np.load(out_file).reshape(*x.shape[:2], -1)
    messages = {str(w.message).replace(f"{workdir}/", "") for w in caught}
    notes = [why, *sorted(_excerpt(message, 90) for message in messages)]
    row = ImportRow(label, True, f"{dt:g}, {convention}", notes="; ".join(notes))
    if ours.shape == theirs.shape:
        row.identical = float(np.mean(ours == theirs))
        row.counts = f"{theirs.sum():g} / {ours.sum():g}"
    return row


# ----------------------------------------------------------------------------- report


def markdown_table(rows: list[Row]) -> str:
    """The rows as a GitHub markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = (cell.replace("|", "\\|") for cell in row.cells())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def import_table(rows: list[ImportRow]) -> str:
    lines = ["| " + " | ".join(IMPORT_HEADER) + " |", "|" + "---|" * len(IMPORT_HEADER)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
    return "\n".join(lines) + "\n"


def report(rows: list[Row], args: argparse.Namespace, produced: list[ImportRow]) -> str:
    command = "python scripts/interop_matrix.py " + " ".join(args.argv)
    imports = (
        "\n## Their files in our Executor\n\nEach producer exports a small network of its own with "
        "its own exporter (`scripts/interop_runner.py --produce`, seeded) and computes its spikes "
        "on 20 steps x 4 samples of uniform [0, 4) input; our Executor runs the file "
        "(`load(path, strict=False)`) with the producer's dt and convention; the share of "
        "identical output spikes:\n\n" + import_table(produced)
        if produced
        else ""
    )
    return (
        "# NIR interop matrix (generated by `scripts/interop_matrix.py`)\n\n"
        f"Command: `{command}`\n\n"
        f"{args.images} test images (the first of the test split; random images without "
        f"checkpoints) as a constant input current for T = {args.timesteps} steps; models "
        "converted with the default settings (reset by subtraction for `faithful`/`portable-soft`, "
        "`reset=zero` for the others). Diffs are over the integrated output trace "
        "`[T, B, classes]`; agreement is on the argmax after T steps. Profiles: "
        "docs/interop.md.\n\n" + markdown_table(rows) + imports
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--importers", nargs="+", choices=sorted(IMPORTERS), default=[*IMPORTERS])
    parser.add_argument("--checkpoints", nargs="+", type=Path, default=[None])
    parser.add_argument("--timesteps", type=positive, default=8)
    parser.add_argument("--images", type=positive, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per importer run")
    parser.add_argument("--venvs", type=Path, default=DEFAULT_VENVS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "interop_matrix.md")
    parser.add_argument("--install-only", action="store_true", help="only build the venvs")
    parser.add_argument(
        "--no-export", action="store_true", help="only the import side (their files in ours)"
    )
    args = parser.parse_args(argv)
    for checkpoint in filter(None, args.checkpoints):
        verify_checkpoint(checkpoint)  # a missing or damaged file fails before the venvs build
    args.argv = argv
    return args


def main(argv: list[str]) -> list[Row]:
    args = parse_args(argv)
    console = Console()
    envs = {name: ensure_env(name, args.venvs, console) for name in args.importers}
    for name, (python, label) in envs.items():
        console.print(f"{name}: {label if python is None else python}")
    if args.install_only:
        return []
    rows: list[Row] = []
    for checkpoint in [] if args.no_export else args.checkpoints:
        model, ann, images = load_model(checkpoint, args.images, args.seed)
        cases, extra = build_cases(ann, images, [images], args.timesteps)
        rows += our_rows(model, cases, extra)
        with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
            workdir = Path(tmp)
            for profile, case in cases.items():
                if isinstance(case, str):
                    continue
                save(case.graph, workdir / f"{profile}.nir")
                np.save(workdir / f"{profile}.npy", case.inputs)
            for name, (python, label) in envs.items():
                rows += importer_rows(name, python, label, model, cases, workdir, args.timeout)
    produced = []
    with tempfile.TemporaryDirectory(prefix="interop-own-") as tmp:
        for name in (n for n in PRODUCED if n in envs):
            python, label = envs[name]
            produced.append(import_row(name, python, label, Path(tmp), args.timeout, args.seed))
    table = Table(*HEADER, title="NIR interop", show_lines=True)
    for row in rows:
        table.add_row(*row.cells())
    console.print(table)
    own = Table(*IMPORT_HEADER, title="Their files in our Executor", show_lines=True)
    for item in produced:
        own.add_row(*item.cells())
    console.print(own)
    atomic_write_text(args.out, report(rows, args, produced))
    console.print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    run_cli(lambda argv: main(argv) and 0)  # the rows are for callers; the exit status is 0
