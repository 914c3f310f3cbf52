"""Portable export profiles run in our executor like the native model they were exported from."""

from __future__ import annotations

import nir
import pytest
import torch

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.models import build_model
from neurocuda.nir import Executor, export, load, save
from neurocuda.nir.metadata import InputSignature
from neurocuda.nir.portable import RESET_OF_PROFILE

T = 6


def _converted(arch: str, reset: str, **kwargs) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    ann = build_model(arch, **kwargs).eval()
    torch.nn.init.zeros_(ann.get_submodule(_last_linear(ann)).bias)  # predictions vary by image
    images = torch.randn(8, 3, 32, 32)
    return convert(ann, [images], ConversionConfig(calibration_batches=1, reset=reset)), images


def _last_linear(model: torch.nn.Module) -> str:
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]


def run_profile(graph: nir.NIRGraph, images: torch.Tensor) -> torch.Tensor:
    """The graph's integrated output ``[T, B, classes]``, fed and read as its metadata says."""
    signature = InputSignature.from_metadata(graph.metadata)
    executor = Executor(graph, dt=signature.dt, convention=signature.reset_convention)
    return signature.integrate(executor(signature.encode(images.expand(T, *images.shape))))


@pytest.mark.parametrize(
    ("arch", "profile"),
    [
        ("cifarnet", "portable-soft"),
        ("cifarnet", "portable-hard"),
        ("cifarnet", "spikingjelly"),
        ("cifarnet", "snntorch"),
        ("resnet20", "portable-soft"),
    ],
)
def test_portable_profile_runs_like_the_native_model(arch, profile, tmp_path):
    """Tolerance: thresholds normalised to 1 (weights divided by theta) and the initial membrane
    added on the input change float rounding; a membrane within rounding of its threshold can fire
    one step apart, which moves an output by one weight. Predictions must stay identical."""
    kwargs = {"widths": (8, 16, 16, 32)} if arch == "cifarnet" else {}
    snn, images = _converted(arch, RESET_OF_PROFILE[profile], **kwargs)
    graph = load(save(export(snn, images[:1], profile=profile), tmp_path / "p.nir"))
    assert InputSignature.from_metadata(graph.metadata).extra_channels == 1
    with torch.no_grad():
        native = snn(images, T)
        out = run_profile(graph, images)
    assert out.shape == native.shape
    assert torch.equal(out[-1].argmax(-1), native[-1].argmax(-1))
    assert (out - native).abs().max() <= 0.1 * native.abs().max()
    assert native.abs().max() > 0


def test_portable_graph_uses_only_plain_nodes():
    snn, images = _converted("cifarnet", "zero", widths=(8, 16, 16, 32))
    graph = export(snn, images[:1], profile="spikingjelly")
    kinds = {type(node).__name__ for node in graph.nodes.values()}
    assert kinds == {"Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output"}
    thresholds = {float(n.v_threshold.max()) for n in graph.nodes.values() if isinstance(n, nir.IF)}
    assert thresholds == {float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)))}
    flatten = [n for n in graph.nodes.values() if isinstance(n, nir.Flatten)]
    assert all(n.start_dim < 0 and n.end_dim < 0 for n in flatten)


def test_snntorch_encoding_equals_portable_hard_exactly():
    """LIF(tau = 2**60 dt, r = 2**60) at dt = 1e-4 is the IF of portable-hard bit for bit."""
    snn, images = _converted("cifarnet", "zero", widths=(8, 8, 8, 8))
    with torch.no_grad():
        lif = run_profile(export(snn, images[:1], profile="snntorch"), images)
        plain = run_profile(export(snn, images[:1], profile="portable-hard"), images)
    assert (lif - plain).abs().max().item() == 0.0


def test_portable_profile_refuses_the_other_reset():
    snn, images = _converted("cifarnet", "subtract", widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"conversion\.reset=zero"):
        export(snn, images[:1], profile="portable-hard")


def test_signature_encodes_indicator_and_integrates():
    signature = InputSignature(extra_channels=1, indicator_steps=1, output="per_step")
    x = torch.randn(3, 2, 3, 4, 4)
    encoded = signature.encode(x)
    assert encoded.shape == (3, 2, 4, 4, 4)
    assert torch.equal(encoded[:, :, :3], x)
    assert encoded[0, :, 3].eq(1).all() and encoded[1:, :, 3].eq(0).all()
    assert torch.equal(signature.integrate(x), x.cumsum(0))
    assert InputSignature.from_metadata(signature.to_metadata()) == signature
    with pytest.raises(ValueError, match="input signature"):
        InputSignature.from_metadata({"signature_output": "spikes"})


def _is_chain(graph: nir.NIRGraph) -> bool:
    return all(
        sum(s == name for s, _ in graph.edges) <= 1 and sum(d == name for _, d in graph.edges) <= 1
        for name in graph.nodes
    )


@pytest.mark.parametrize("profile", ["norse", "sinabs"])
def test_chain_profiles_are_chains_of_mapped_nodes(profile):
    """norse and sinabs run graphs with nirtorch's legacy executor (not topologically ordered):
    the initial membrane travels in a carrier channel, AvgPool2d becomes SumPool2d."""
    snn, images = _converted("cifarnet", "subtract", widths=(8, 16, 16, 32))
    graph = export(snn, images[:1], profile=profile)
    assert _is_chain(graph)
    kinds = {type(node).__name__ for node in graph.nodes.values()}
    neuron = "CubaLIF" if profile == "norse" else "IF"
    assert kinds == {"Input", "Conv2d", neuron, "SumPool2d", "Flatten", "Output"}
    neurons = [n for n in graph.nodes.values() if isinstance(n, nir.IF | nir.CubaLIF)]
    assert {n.v_threshold.shape[0] for n in neurons} == {8 + 1, 16 + 1, 32 + 1}  # + carrier


def test_chain_profile_with_the_subtract_convention_runs_like_the_native_model():
    """The sinabs file read with plain reset by subtraction is the soft-reset model in a chain
    (carrier channel, SumPool2d, 1x1-conv output): same predictions, diff within rounding."""
    snn, images = _converted("cifarnet", "subtract", widths=(8, 16, 16, 32))
    graph = export(snn, images[:1], profile="sinabs")
    signature = InputSignature.from_metadata(graph.metadata)
    assert signature.reset_convention == "sinabs"
    with torch.no_grad():
        native = snn(images, T)
        out = signature.integrate(
            Executor(graph, convention="subtract")(
                signature.encode(images.expand(T, *images.shape))
            )
        )
    assert torch.equal(out[-1].argmax(-1), native[-1].argmax(-1))
    assert (out - native).abs().max() <= 1e-3 * native.abs().max()


def test_chain_profile_refuses_a_residual_network():
    snn, images = _converted("resnet20", "subtract")
    with pytest.raises(ValueError, match="legacy executor"):
        export(snn, images[:1], profile="norse")


def test_sinabs_profile_is_written_as_nir_1_0_4_reads_it(tmp_path):
    """IF without v_reset and nodes without metadata (nir 1.0.4 refuses both fields)."""
    import h5py

    snn, images = _converted("cifarnet", "subtract", widths=(8, 8, 8, 8))
    graph = export(snn, images[:1], profile="sinabs")
    path = save(graph, tmp_path / "sinabs.nir")
    with h5py.File(path) as file:
        nodes = file["node"]["nodes"]
        kinds = {name: nodes[name]["type"][()] for name in nodes}
        assert b"IF" in kinds.values()
        for name, kind in kinds.items():
            assert "metadata" not in nodes[name]
            if kind == b"IF":
                assert "v_reset" not in nodes[name]
    loaded = load(path)
    assert loaded.metadata["profile"] == "sinabs"
    with torch.no_grad():
        assert torch.equal(run_profile(loaded, images), run_profile(graph, images))


def test_spikingjelly_profile_read_as_spikingjelly_equals_portable_hard_exactly():
    """Thresholds 1 + 1 ulp fired on v >= threshold (convention 'spikingjelly') is v > 1."""
    snn, images = _converted("cifarnet", "zero", widths=(8, 8, 8, 8))
    graph = export(snn, images[:1], profile="spikingjelly")
    assert InputSignature.from_metadata(graph.metadata).reset_convention == "spikingjelly"
    with torch.no_grad():
        jelly = run_profile(graph, images)
        plain = run_profile(export(snn, images[:1], profile="portable-hard"), images)
    assert (jelly - plain).abs().max().item() == 0.0
