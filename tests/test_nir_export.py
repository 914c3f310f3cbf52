"""Export -> save -> load -> execute reproduces the native spiking model bit for bit."""

from __future__ import annotations

import nir
import pytest
import torch
from torch import nn

from neurocuda.conversion import ConversionConfig, convert
from neurocuda.models import build_model
from neurocuda.nir import Executor, export, load, save
from neurocuda.nir.interop import run_with_nirtorch
from neurocuda.snn.layout import memory_format

T = 4


def with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so folding is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.2)
    return model.eval()


def converted(arch: str, reset: str = "subtract", **kwargs) -> nn.Module:
    torch.manual_seed(0)
    ann = with_bn_statistics(build_model(arch, **kwargs))
    data = [torch.randn(4, 3, 32, 32)]
    return convert(ann, data, ConversionConfig(calibration_batches=1, reset=reset))


def round_trip(snn: nn.Module, x: torch.Tensor, tmp_path, profile: str = "faithful"):
    graph = export(snn, x, profile=profile, metadata={"encoding": "direct", "timesteps": T})
    loaded = load(save(graph, tmp_path / "model.nir"))
    with torch.no_grad():
        native = snn(x, T)
        executed = Executor(loaded)(x.expand(T, *x.shape))
    return native, executed, loaded


@pytest.mark.parametrize(
    ("arch", "images"), [("cifarnet", 2), ("resnet20", 2), ("resnet18", 2), ("vgg16", 2)]
)
def test_round_trip_is_bit_exact(arch, images, tmp_path):
    snn = converted(arch)
    x = torch.randn(images, 3, 32, 32)
    native, executed, _ = round_trip(snn, x, tmp_path)
    assert native.shape == executed.shape == (T, images, 10)
    assert (native - executed).abs().max().item() == 0.0
    assert native.abs().sum() > 0  # the network is not silent


def test_channels_last_ann_round_trip_is_bit_exact(tmp_path):
    """ClassifierModule trains in channels_last; the SNN must still match the NIR file exactly."""
    torch.manual_seed(0)
    ann = with_bn_statistics(build_model("cifarnet")).to(memory_format=torch.channels_last)
    snn = convert(ann, [torch.randn(8, 3, 32, 32)], ConversionConfig(calibration_batches=1))
    # convs round differently on CPU in another layout (~3e-6): the SNN holds its weights in the
    # layout policy's (neurocuda.snn.layout), as the executor does, whatever the ANN trained with
    convs = [m for m in snn.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=memory_format(m.weight.device)) for m in convs)
    native, executed, _ = round_trip(snn, torch.randn(8, 3, 32, 32), tmp_path)
    assert (native - executed).abs().max().item() == 0.0


def test_soft_reset_is_a_recurrent_subgraph(tmp_path):
    snn = converted("cifarnet", widths=(8, 8, 8, 8))
    _, _, graph = round_trip(snn, torch.randn(2, 3, 32, 32), tmp_path)
    neurons = [n for n in graph.nodes.values() if isinstance(n, nir.NIRGraph)]
    assert len(neurons) == len(snn.neuron_layers())
    sub = neurons[0]
    assert {type(n) for n in sub.nodes.values()} == {
        nir.Input,
        nir.I,
        nir.Threshold,
        nir.Scale,
        nir.Output,
    }
    assert ("reset", "integrator") in sub.edges
    assert (sub.nodes["integrator"].r == 1).all()
    assert graph.metadata["reset"] == "subtract" and graph.metadata["timesteps"] == T


def test_hard_reset_portable_profile_uses_nir_if(tmp_path):
    snn = converted("resnet20", reset="zero")
    x = torch.randn(3, 3, 32, 32)
    native, executed, graph = round_trip(snn, x, tmp_path, profile="portable")
    assert any(isinstance(n, nir.IF) for n in graph.nodes.values())
    assert not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values())
    assert (native - executed).abs().max().item() == 0.0


def test_portable_profile_rejects_soft_reset():
    snn = converted("cifarnet", widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"conversion\.reset=zero"):
        export(snn, torch.randn(1, 3, 32, 32), profile="portable")


def test_unsupported_module_is_named():
    snn = converted("cifarnet", widths=(8, 8, 8, 8))
    snn.network[0] = nn.Sequential(snn.network[0], nn.MaxPool2d(1))
    with pytest.raises(ValueError, match=r"'0.1' \(MaxPool2d\) has no NIR mapping"):
        export(snn, torch.randn(1, 3, 32, 32))


class _Shift(nn.Module):
    """Arithmetic in a forward with no module: nirtorch wired it as a plain edge (a sum of one
    input), dropping the constant, and the file computed something else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5


@pytest.mark.parametrize("arch", ["cifarnet", "resnet20"])
def test_operation_outside_a_module_is_named(arch):
    snn = converted(arch, widths=(8, 8, 8, 8)) if arch == "cifarnet" else converted(arch)
    first = snn.network[0] if arch == "cifarnet" else snn.network.stem
    shifted = nn.Sequential(first, _Shift())
    if arch == "cifarnet":
        snn.network[0] = shifted
    else:
        snn.network.stem = shifted
    with pytest.raises(ValueError, match=r"computes add\(.*, 0\.5\) in module '.*1' \(_Shift\)"):
        export(snn, torch.randn(1, 3, 32, 32))


def test_poisson_input_runs_every_step(tmp_path):
    snn = converted("cifarnet", widths=(8, 8, 8, 8))
    spikes = (torch.rand(T, 2, 3, 32, 32) > 0.5).float()
    graph = export(snn, spikes[0])
    with torch.no_grad():
        assert torch.equal(snn(spikes, T), Executor(graph)(spikes))


def test_nirtorch_interpreter_runs_faithful_graph_identically(tmp_path):
    snn = converted("resnet20")
    x = torch.randn(3, 3, 32, 32)
    native, _, graph = round_trip(snn, x, tmp_path)
    with torch.no_grad():
        interpreted = run_with_nirtorch(graph, x.expand(T, *x.shape).contiguous())
    assert (native - interpreted).abs().max().item() == 0.0


def test_trained_model_round_trip(tmp_path):
    """A small cifarnet trained a few steps on a learnable synthetic task."""
    torch.manual_seed(1)
    ann = build_model("cifarnet", widths=(8, 16, 16, 16))
    x = torch.randn(64, 3, 32, 32)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    opt = torch.optim.Adam(ann.parameters(), lr=0.01)
    for _ in range(25):
        opt.zero_grad()
        nn.functional.cross_entropy(ann(x), y).backward()
        opt.step()
    for module in ann.modules():  # exact BN statistics of the training data
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        ann(x)
    ann.eval()
    assert (ann(x).argmax(1) == y).float().mean() > 0.7
    snn = convert(ann, [x[:32]], ConversionConfig(calibration_batches=1))
    native, executed, _ = round_trip(snn, x[:8], tmp_path)
    assert (native - executed).abs().max().item() == 0.0


def test_layers_keep_the_models_names_in_the_file_and_the_deploy_network(tmp_path):
    """Node names stay NIR ids (no dots); metadata["layer"] and population labels read like the
    model, and a deployment report lists them."""
    from neurocuda.deploy.evaluate import deploy
    from neurocuda.deploy.loihi2.backend import Loihi2Backend
    from neurocuda.deploy.network import compile_graph

    snn = converted("resnet20")
    _, _, graph = round_trip(snn, torch.randn(2, 3, 32, 32), tmp_path)
    assert graph.nodes["layers_3_conv1"].metadata["layer"] == "layers.3.conv1"
    assert graph.nodes["layers_3_act1_0"].metadata["layer"] == "layers.3.act1"  # the IF subgraph
    assert graph.nodes["fc_0"].metadata["layer"] == graph.nodes["fc_1"].metadata["layer"] == "fc"
    neurons = [f"layers.{b}.act{i}" for b in range(9) for i in (1, 2)]
    network = compile_graph(graph)
    labels = [pop.label for pop in network.populations]
    assert labels == ["stem.2", *neurons, "fc"]
    backend = Loihi2Backend()
    backend.prepare(graph)
    x = torch.rand(2, 3, 32, 32)
    backend.calibrate([(x, torch.zeros(2, dtype=torch.long))])
    report = deploy(backend, [(x, torch.zeros(2, dtype=torch.long))], 2, progress=False)
    assert [row.name for row in report.layers] == labels
    # and the graph's input: the first convolution's ANN MACs read it
    assert {row["name"] for row in report.energy["layers"]} == set(labels) | set(network.inputs)
    resources = [row["name"] for row in report.target_info["resources"]["layers"]]
    quantized = [row["name"] for row in report.target_info["quantization"]["layers"]]
    assert resources == quantized == labels
