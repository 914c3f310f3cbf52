"""Deployment targets on hand-built NIR graphs with the structure of docs/semantics.md."""

from __future__ import annotations

import itertools
import json

import nir
import numpy as np
import pytest
import torch

from neurocuda.deploy import GraphCompileError, compile_graph, deploy, write_report
from neurocuda.deploy.loihi2.backend import Loihi2Backend
from neurocuda.deploy.loihi2.encoding import InputEncoding
from neurocuda.deploy.loihi2.resources import NEURONS_PER_CORE, map_resources
from neurocuda.deploy.torch_backend import TorchBackend
from neurocuda.metrics.energy import FP32_MAC_PJ, LOIHI_NEURON_UPDATE_PJ, LOIHI_SYNOP_PJ

T = 6


def soft_if(shape, theta: np.ndarray, v_init: np.ndarray) -> nir.NIRGraph:
    """I(r=1) -> Threshold(theta - v_init), recurrent Scale(-theta) into the I."""
    full = lambda a: np.broadcast_to(a, shape).astype(np.float32).copy()  # noqa: E731
    nodes = {
        "input": nir.Input(input_type=np.array(shape)),
        "integrator": nir.I(r=np.ones(shape, dtype=np.float32)),
        "threshold": nir.Threshold(threshold=full(theta - v_init)),
        "reset": nir.Scale(scale=full(-theta)),
        "output": nir.Output(output_type=np.array(shape)),
    }
    edges = [("input", "integrator"), ("integrator", "threshold"), ("threshold", "reset"),
             ("reset", "integrator"), ("threshold", "output")]  # fmt: skip
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def hand_graph(residual: bool = False, hard_reset: bool = False) -> nir.NIRGraph:
    """conv -> IF -> Scale(theta) -> AvgPool -> conv (+ skip) -> IF -> Scale -> Flatten -> Affine.

    Weights are multiples of 1/8 and thresholds powers of two, so 8-bit mantissas represent them
    exactly and the loihi2 target must reproduce the float readout exactly.
    """
    g = np.random.default_rng(0)
    w1 = (g.integers(-8, 9, (4, 2, 3, 3)) / 8).astype(np.float32)
    b1 = (g.integers(-4, 5, 4) / 8).astype(np.float32)
    w2 = (g.integers(-8, 9, (4, 4, 3, 3)) / 8).astype(np.float32)
    w3 = (g.integers(-8, 9, (3, 4 * 2 * 2)) / 8).astype(np.float32)
    b3 = (g.integers(-4, 5, 3) / 8).astype(np.float32)
    theta1 = np.array([1.0, 2.0, 1.0, 0.5], dtype=np.float32).reshape(4, 1, 1)
    theta2 = np.array([1.0, 1.0, 2.0, 1.0], dtype=np.float32).reshape(4, 1, 1)

    def neuron(shape, theta):
        if hard_reset:
            v = np.broadcast_to(theta, shape).astype(np.float32)
            return nir.IF(r=np.ones(shape, np.float32), v_threshold=v / 2, v_reset=-v / 2)
        return soft_if(shape, theta, theta / 2)

    nodes = {
        "input": nir.Input(input_type=np.array([2, 4, 4])),
        "conv1": nir.Conv2d(input_shape=(4, 4), weight=w1, stride=1, padding=1, dilation=1,
                            groups=1, bias=b1),
        "if1": neuron((4, 4, 4), theta1),
        "scale1": nir.Scale(scale=np.broadcast_to(theta1, (4, 4, 4)).copy()),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(2, 2), weight=w2, stride=1, padding=1, dilation=1,
                            groups=1, bias=np.zeros(4, np.float32)),
        "if2": neuron((4, 2, 2), theta2),
        "scale2": nir.Scale(scale=np.broadcast_to(theta2, (4, 2, 2)).copy()),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0),
        "fc": nir.Affine(weight=w3, bias=b3),
        "readout": nir.I(r=np.ones(3, np.float32)),
        "output": nir.Output(output_type=np.array([3])),
    }  # fmt: skip
    edges = [("input", "conv1"), ("conv1", "if1"), ("if1", "scale1"), ("scale1", "pool"),
             ("pool", "conv2"), ("conv2", "if2"), ("if2", "scale2"), ("scale2", "flat"),
             ("flat", "fc"), ("fc", "readout"), ("readout", "output")]  # fmt: skip
    if residual:
        edges.insert(5, ("pool", "if2"))  # identity shortcut summed at the receiving neurons
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def batches(n: int = 12, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    # inputs on a 1/16 grid within [-2, 2]: exact as 8-bit payloads with scale 1/16
    x = torch.randint(-32, 33, (n, 2, 4, 4), generator=g).float() / 16
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def test_compiler_folds_scale_pool_and_residual() -> None:
    net = compile_graph(hand_graph(residual=True))
    assert [p.kind for p in net.populations] == ["subtract", "subtract", "readout"]
    into_if2 = [p for p in net.projections if p.target == net.populations[1].name]
    conv = next(p for p in into_if2 if p.weight.shape[-1] == 6)
    assert conv.stride == (2, 2) and conv.padding == (2, 2)  # pool folded into the kernel
    assert len(into_if2) == 2  # conv path + identity shortcut
    assert net.macs["conv1"] == 4 * 4 * 4 * 2 * 9 and net.macs["fc"] == 3 * 16


# per-channel dyadic scale and offset: the offsets reach border neurons through zero padding
SHIFTED = InputEncoding(torch.tensor([1 / 16, 1 / 8]), torch.tensor([0.5, -0.25]))


@pytest.mark.parametrize(
    ("residual", "encoding"),
    [(False, InputEncoding.uniform(1 / 16)), (True, InputEncoding.uniform(1 / 16)),
     (False, SHIFTED)],
)  # fmt: skip
def test_cpu_and_loihi2_agree_exactly_on_exactly_representable_graph(
    residual: bool, encoding: InputEncoding
) -> None:
    graph = hand_graph(residual=residual)
    cpu = TorchBackend("cpu")
    cpu.prepare(graph)
    # 10 bits of headroom: these inputs drive membranes to -200 thresholds without clipping
    loihi = Loihi2Backend(input_encoding=encoding, headroom_bits=10)
    loihi.prepare(graph)
    for payload, _ in batches():
        x = payload * 16 * encoding.scale.reshape(-1, 1, 1) + encoding.offset.reshape(-1, 1, 1)
        x = x.float()
        float_out = cpu.run(x, T)
        int_out = loihi.run(x, T)
        assert torch.equal(float_out.logits, int_out.logits)
        assert float_out.spikes == int_out.spikes and float_out.synops == int_out.synops
    assert loihi.quantization.saturations() == 0
    assert all(v == 0 for v in int_out.extra.values())


def test_lava_mode_adds_pipeline_delay_and_hard_reset() -> None:
    loihi = Loihi2Backend(mode="lava", input_encoding=InputEncoding.uniform(1 / 16))
    loihi.prepare(hand_graph(hard_reset=True))
    out = loihi.run(batches()[0][0], T)
    assert out.steps_run == T + 3  # three projections on the input -> readout path
    pops = loihi.int_network.populations
    assert all(p.reset == "zero" and p.vth_shift == 6 for p in pops)


def test_float_backend_handles_portable_if_graph() -> None:
    cpu = TorchBackend("cpu")
    cpu.prepare(hand_graph(hard_reset=True))
    out = cpu.run(batches()[0][0], T)
    assert out.logits.shape == (4, 3) and sum(out.spikes.values()) > 0


def test_gpu_target_without_cuda_says_what_to_do() -> None:
    if torch.cuda.is_available():
        backend = TorchBackend("gpu")
        backend.prepare(hand_graph())
        assert backend.run(batches()[0][0], T).logits.shape == (4, 3)
        return
    with pytest.raises(RuntimeError, match="deploy=cpu"):
        TorchBackend("gpu")


def test_unsupported_node_is_rejected_by_name() -> None:
    graph = hand_graph()
    graph.nodes["readout"] = nir.LIF(
        tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)
    )
    with pytest.raises(GraphCompileError, match=r"readout.*LIF"):
        compile_graph(graph)


def test_report_holds_the_numbers(tmp_path) -> None:
    backend = Loihi2Backend(input_encoding=InputEncoding.uniform(1 / 16))
    backend.prepare(hand_graph())
    report = deploy(backend, batches(), T, num_classes=3, progress=False, source="hand")
    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["images"] == 12 and 0.0 <= data["accuracy"] <= 1.0
    assert data["latency_timesteps"] == T
    first = data["layers"][0]
    assert first["neurons"] == 64 and first["spikes_per_image"] > 0
    energy = data["energy"]
    expected = sum(
        row["synops_per_image"] * LOIHI_SYNOP_PJ
        + row["neuron_updates_per_image"] * LOIHI_NEURON_UPDATE_PJ
        for row in data["layers"]
    ) * 1e-6  # fmt: skip
    assert energy["loihi_uj"] == pytest.approx(expected)
    assert energy["ann_fp32_uj"] == pytest.approx(energy["ann_macs"] * FP32_MAC_PJ * 1e-6)
    assert data["target_info"]["resources"]["cores"] >= 3
    text = paths["markdown"].read_text()
    assert f"{100 * report.accuracy:.2f}%" in text and "neuro-cores" in text
    first_layer = data["target_info"]["quantization"]["layers"][0]
    assert f"| {first_layer['name']} | " in text and "weight rel. error" in text
    assert paths["plot"].stat().st_size > 1000


def test_large_batches_run_in_pieces_with_the_same_report(monkeypatch) -> None:
    backend = Loihi2Backend(input_encoding=InputEncoding.uniform(1 / 16))
    backend.prepare(hand_graph())
    whole = deploy(backend, batches(batch=12), T, num_classes=3, progress=False)
    runs = []
    original = backend.run
    monkeypatch.setattr(backend, "run", lambda x, t: runs.append(len(x)) or original(x, t))
    monkeypatch.setattr("neurocuda.deploy.evaluate.MAX_SAMPLE_STEPS", 5 * T)
    pieces = deploy(backend, batches(batch=12), T, num_classes=3, progress=False)
    assert runs == [5, 5, 2]  # at most 5 images x T steps per run
    assert pieces.images == whole.images == 12 and pieces.accuracy == whole.accuracy
    assert [r.synops_per_image for r in pieces.layers] == [r.synops_per_image for r in whole.layers]


def test_resource_map_splits_large_layers() -> None:
    net = compile_graph(hand_graph())
    big = net.populations[0]
    big.shape = (4, 64, 64)  # 16384 neurons: two cores by the neuron limit
    layer = map_resources(net).layers[0]
    assert layer.cores == -(-16384 // NEURONS_PER_CORE) and layer.limited_by == "neurons"


def test_fan_out_of_a_strided_conv_counts_every_covered_input() -> None:
    """Brute force: each (output, kernel tap) pair that reads an input is one synapse."""
    from neurocuda.metrics.fanout import fan_out_map

    expected = torch.zeros(3, 8, 8, dtype=torch.int64)
    for oy in range(4):
        for ox in range(4):
            for ky in range(3):
                for kx in range(3):
                    y, x = 2 * oy - 1 + ky, 2 * ox - 1 + kx
                    if 0 <= y < 8 and 0 <= x < 8:
                        expected[:, y, x] += 4  # every one of the 4 output channels
    fan = fan_out_map("conv", (4, 3, 3, 3), (3, 8, 8), stride=(2, 2), padding=(1, 1))
    assert torch.equal(fan, expected)  # the last row and column are read by the last output


class RecordingBackend(TorchBackend):
    """A new target in a few lines: the float executor, remembering its calibration batches."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.name = "recording"
        self.calibrated: list[torch.Tensor] = []

    def calibrate(self, batches) -> None:
        self.calibrated = [x for x, _ in batches]


def test_run_deployment_takes_any_backend(tmp_path) -> None:
    from neurocuda.deploy import run_deployment

    backend = RecordingBackend()
    report, paths = run_deployment(
        hand_graph(), backend, batches(), T, tmp_path, calibration_batches=2, num_classes=3,
        progress=False,
    )  # fmt: skip
    assert len(backend.calibrated) == 2 and torch.equal(backend.calibrated[1], batches()[1][0])
    assert report.target == "recording" and report.images == 12
    assert paths["json"] == tmp_path / "deploy_recording.json" and paths["json"].is_file()
    training = batches(n=8, batch=2)[::-1]  # other images: calibration comes from them
    run_deployment(
        hand_graph(), backend, batches(), T, tmp_path, calibration_batches=3, num_classes=3,
        progress=False, calibration=training,
    )  # fmt: skip
    assert len(backend.calibrated) == 3 and torch.equal(backend.calibrated[0], training[0][0])


def test_calibration_loader_reads_training_images_never_evaluated_ones(tiny_datamodule) -> None:
    from neurocuda.data import calibration_loader

    class TrainOnly:  # a data module without a calibration loader
        def train_dataloader(self):
            return "train"

    first, again = (next(iter(calibration_loader(tiny_datamodule)))[0] for _ in range(2))
    assert torch.equal(first, again)  # fixed images, un-augmented
    train = tiny_datamodule.datasets["train"]
    train.augment = False
    assert all(torch.equal(first[i], train[i][0]) for i in range(4))  # the training split's
    assert calibration_loader(TrainOnly()) == "train"


@pytest.mark.parametrize("option", ["cpu", "gpu", "loihi2"])
def test_deploy_option_names_its_backend_class(option: str, tmp_path) -> None:
    import hydra
    from hydra.errors import InstantiationException

    from neurocuda.deploy import Backend
    from neurocuda.training.compose import compose_train_config

    cfg = compose_train_config([f"deploy={option}"], tmp_path)
    assert cfg.deploy.callbacks.deployment.backend == cfg.deploy.backend
    if option == "gpu" and not torch.cuda.is_available():
        with pytest.raises(InstantiationException, match="deploy=cpu"):
            hydra.utils.instantiate(cfg.deploy.backend)
        return
    backend = hydra.utils.instantiate(cfg.deploy.backend)
    assert isinstance(backend, Backend) and backend.name == option


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"headroom_bits": -3}, "headroom_bits"),
        ({"readout_headroom_bits": 24}, "readout_headroom_bits"),
    ],
)
def test_loihi2_headroom_outside_the_membrane_is_refused(kwargs: dict, key: str) -> None:
    """-3 was taken, and put thresholds above the 24-bit membrane's range."""
    with pytest.raises(
        ValueError, match=rf"deploy\.backend\.{key}=-?\d+ must be an integer in \[0, 23\]"
    ):
        Loihi2Backend(**kwargs)


def _same_padded_graph(kernel: int, dilation: int) -> nir.NIRGraph:
    """conv -> IF -> Scale -> conv(padding="same", ``kernel``, ``dilation``) -> IF -> Scale ->
    Flatten -> Affine -> I, on 2 x 6 x 6 inputs."""
    g, shape = np.random.default_rng(0), (3, 6, 6)

    def neuron() -> nir.IF:
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=np.full(shape, 0.5, np.float32),
                      v_reset=np.full(shape, -0.5, np.float32))  # fmt: skip

    nodes = {
        "input": nir.Input(np.array([2, 6, 6])),
        "conv1": nir.Conv2d(input_shape=(6, 6), weight=g.standard_normal((3, 2, 3, 3)).astype(
            np.float32), stride=1, padding=1, dilation=1, groups=1,
            bias=np.full(3, 0.5, np.float32)),
        "if1": neuron(), "scale1": nir.Scale(scale=np.ones(shape, np.float32)),
        "conv2": nir.Conv2d(input_shape=(6, 6), weight=g.standard_normal(
            (3, 3, kernel, kernel)).astype(np.float32), stride=1, padding="same",
            dilation=dilation, groups=1, bias=np.zeros(3, np.float32)),
        "if2": neuron(), "scale2": nir.Scale(scale=np.ones(shape, np.float32)),
        "flat": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0),
        "affine": nir.Affine(weight=g.standard_normal((4, 108)).astype(np.float32),
                             bias=np.zeros(4, np.float32)),
        "integ": nir.I(r=np.ones(4, np.float32)), "output": nir.Output(np.array([4])),
    }  # fmt: skip
    order = ["input", "conv1", "if1", "scale1", "conv2", "if2", "scale2", "flat", "affine",
             "integ", "output"]  # fmt: skip
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(order)), type_check=False)


def test_same_padding_with_dilation_folds_as_torch_pads_it() -> None:
    """'same' was read as k // 2 whatever the dilation: a 4x4 output where the executor gives
    6x6, wrong synop counts, and a crash in the loihi2 simulator."""
    backend = TorchBackend("cpu")
    backend.prepare(_same_padded_graph(kernel=3, dilation=2))
    (projection,) = [p for p in backend.network.projections if p.target == "if2"]
    assert projection.padding == (2, 2)
    x = torch.rand(4, 2, 6, 6)
    loihi = Loihi2Backend(device="cpu")
    loihi.prepare(_same_padded_graph(kernel=3, dilation=2))
    loihi.calibrate([(x, None)])
    assert loihi.run(x, 4).logits.shape == (4, 4)
    with pytest.raises(GraphCompileError, match=r"padding='same' with kernel \(4, 4\) .* unevenly"):
        TorchBackend("cpu").prepare(_same_padded_graph(kernel=4, dilation=1))


def test_lava_mode_rates_count_the_steps_it_ran() -> None:
    """lava mode runs T + depth steps and counts spikes over all of them: divided by T the
    reported rate went above 1."""
    x, y = torch.rand(8, 2, 6, 6), torch.zeros(8, dtype=torch.long)
    backend = Loihi2Backend(mode="lava", device="cpu")
    backend.prepare(_same_padded_graph(kernel=3, dilation=1))
    backend.calibrate([(x, y)])
    report = deploy(backend, [(x, y)], 2, num_classes=4, progress=False)
    assert report.latency_timesteps > 2
    assert all(0 <= layer.spike_rate <= 1 for layer in report.layers)


def test_loihi2_refuses_a_sequence_input() -> None:
    """[T, B, C, H, W] was encoded with the scales along B (and B=1 became 3 images)."""
    backend = Loihi2Backend(device="cpu")
    backend.prepare(_same_padded_graph(kernel=3, dilation=1))
    with pytest.raises(ValueError, match=r"loihi2 takes a batch \[B, 2, 6, 6\] .* got shape"):
        backend.run(torch.rand(4, 1, 2, 6, 6), 4)


def test_the_report_plot_names_each_layer(tmp_path, monkeypatch, caplog) -> None:
    """Both panels were labelled 0..n-1 (indices the markdown table does not use), and the
    number-like labels made matplotlib log a categorical-units notice at every deployment."""
    from types import SimpleNamespace

    from neurocuda.deploy import report as report_module

    figures = []
    monkeypatch.setattr(report_module, "save_figure", lambda fig, path, dpi: figures.append(fig))
    layers = [SimpleNamespace(name=n, spike_rate=r) for n, r in (("conv1", 0.1), ("fc", 0.0))]
    energy = {"layers": [{"name": "conv1", "synops": 10.0, "ann_macs": 20},
                         {"name": "input", "synops": 5.0, "ann_macs": 8}]}  # fmt: skip
    with caplog.at_level("INFO", logger="matplotlib"):
        report_module.plot(SimpleNamespace(layers=layers, energy=energy, target="cpu"), tmp_path)
    rates, operations = figures[0].axes
    assert [t.get_text() for t in rates.get_xticklabels()] == ["conv1", "fc"]
    assert [t.get_text() for t in operations.get_xticklabels()] == ["conv1", "input"]
    assert "categorical units" not in caplog.text
