"""SNN fine-tuning: surrogate gradient, trainable thresholds, exact NIR after training, train.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from callbacks.checkpoint import CheckpointWithNIR
from callbacks.weight_average import SNNWeightAverage
from neurocuda.conversion import ConversionConfig, convert
from neurocuda.files import read_checkpoint
from neurocuda.models import build_model
from neurocuda.nir import Executor
from neurocuda.nir import load as load_nir
from neurocuda.nir.verify import compare, export_and_compare
from neurocuda.snn import (
    IFNeuron,
    SpikingModel,
    Surrogate,
    neuron_scale_pairs,
    refresh,
    runtime_copy,
    spike,
    thresholds_per_channel,
)
from neurocuda.snn.if_sequence import DEFAULT_SURROGATE, if_sequence
from neurocuda.training import SNNFinetuneModule
from neurocuda.training.conv_norms import ConvNorms
from neurocuda.training.finetune_stage import distill_teacher
from neurocuda.training.snn_finetune import (
    DISTILL_KEYS,
    FINETUNE_KEYS,
    load_finetuned,
    snn_structure,
)
from neurocuda.training.weight_noise import grid_steps, with_grid_noise
from train import train

ANN = {"arch": "cifarnet", "num_classes": 10, "arch_kwargs": {"widths": [4, 8, 8, 8]}}
STEPS = 4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def batch(tiny_datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(iter(tiny_datamodule.calibration_dataloader()))
    return x, y


@pytest.fixture
def module(tiny_datamodule) -> SNNFinetuneModule:
    return make_module(tiny_datamodule)


def make_module(datamodule, **settings) -> SNNFinetuneModule:
    """A tiny converted CifarNet in a fine-tuning module (``settings`` override its defaults)."""
    torch.manual_seed(0)
    ann = build_model(**{k: v for k, v in ANN.items() if k != "arch_kwargs"}, **ANN["arch_kwargs"])
    config = ConversionConfig(calibration_batches=1, per_channel=True, correction_timesteps=2)
    snn = convert(ann, datamodule.calibration_dataloader(), config)
    defaults = {"timesteps": STEPS, "eval_timesteps": [1, 2, 4], "optimizer": {"lr": 3e-2}}
    return SNNFinetuneModule(
        snn,
        scheduler="none",
        structure=snn_structure(ANN, "subtract", snn.input_shape),
        **{**defaults, **settings},
    )


def fit(
    module: SNNFinetuneModule, x: torch.Tensor, y: torch.Tensor, steps: int, root: Path,
    precision: str = "32-true",
) -> L.Trainer:  # fmt: skip
    """``steps`` optimizer steps on the batch ``(x, y)``; returns the trainer."""
    loader = DataLoader(TensorDataset(x.repeat(steps, 1, 1, 1), y.repeat(steps)), len(y))
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=root, precision=precision,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def loss_of(module: SNNFinetuneModule, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(module.criterion(module(x)[-1] / STEPS, y))


def test_spike_forward_is_the_comparison_and_backward_a_triangle() -> None:
    u = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0], requires_grad=True)
    fire_level = torch.tensor(1.0, requires_grad=True)
    threshold = torch.tensor(2.0)
    s = spike(u, fire_level, threshold)
    assert s.tolist() == (u > fire_level).float().tolist() == [0, 0, 0, 1, 1, 1]
    s.sum().backward()
    # height 1/theta = 0.5 at u = fire_level, zero at distance theta: 1 - |u - 1| / 2, over 2
    assert u.grad.tolist() == [0.25, 0.375, 0.5, 0.375, 0.25, 0.0]
    assert float(fire_level.grad) == -sum(u.grad.tolist())


def _if_step_by_step(x, threshold, fire_level, surrogate=DEFAULT_SURROGATE):
    """Reference: the contract's loop written out with autograd recording every step (the
    reset's spike detached from the graph with ``surrogate.detach_reset``)."""
    u, s, out = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        u = u + (x[t] + (-threshold) * (s.detach() if surrogate.detach_reset else s))
        s = spike(u, fire_level, threshold * surrogate.width)
        out.append(s)
    return torch.stack(out)


SURROGATES = [Surrogate(), Surrogate(detach_reset=True), Surrogate(width=0.5)]


@pytest.mark.parametrize("surrogate", SURROGATES, ids=["default", "detach_reset", "width_0.5"])
@pytest.mark.parametrize("constant_input", [False, True])
def test_the_sequence_node_matches_autograd_through_every_step(constant_input, surrogate) -> None:
    torch.manual_seed(0)
    steps, shape = 6, (3, 4, 5, 5)
    base = torch.randn(shape) if constant_input else torch.randn(steps, *shape)
    base = base.contiguous(memory_format=torch.channels_last) if constant_input else base
    threshold = (torch.rand(4, 1, 1) + 0.5).requires_grad_()
    v_init = (torch.rand(4, 1, 1) * 0.5).requires_grad_()
    weights = torch.randn(steps, *shape)  # a loss that weights every spike differently
    grads, outputs = [], []
    sequence = partial(if_sequence, surrogate=surrogate)
    for run in (sequence, partial(_if_step_by_step, surrogate=surrogate)):
        x = base.clone().requires_grad_()
        inputs = x.expand(steps, *shape) if constant_input else x
        spikes = run(inputs, threshold, threshold - v_init)
        (spikes * weights).sum().backward()
        outputs.append(spikes.detach())
        grads.append([t.grad.clone() for t in (x, threshold, v_init)])
        threshold.grad = v_init.grad = None
    assert torch.equal(outputs[0], outputs[1]) and 0 < float(outputs[0].mean()) < 1
    for ours, reference in zip(*grads, strict=True):
        assert float(reference.abs().sum()) > 0
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("surrogate", SURROGATES[1:], ids=["detach_reset", "width_0.5"])
@pytest.mark.parametrize("compiled", [False, True])
def test_the_surrogate_settings_change_the_gradients_not_the_spikes(compiled, surrogate) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, 5, 5).contiguous(memory_format=torch.channels_last_3d)
    threshold, fire_level = torch.full((3, 1, 1), 0.8), torch.full((3, 1, 1), 0.4)
    runs = []
    for setting in (Surrogate(), surrogate):
        inputs = x.clone().requires_grad_()
        spikes = if_sequence(inputs, threshold, fire_level, compiled, surrogate=setting)
        spikes.sum().backward()
        runs.append((spikes.detach(), inputs.grad))
    (default, grad_default), (changed, grad_changed) = runs
    assert torch.equal(default, changed)
    assert not torch.allclose(grad_default, grad_changed)


def test_a_bad_surrogate_width_is_refused() -> None:
    with pytest.raises(ValueError, match=r"finetune\.surrogate_width=0 must be > 0"):
        Surrogate(width=0)


def test_fine_tuning_lowers_the_training_loss(module, batch, tmp_path: Path) -> None:
    x, y = batch
    before = loss_of(module, x, y)
    fit(module, x, y, steps=10, root=tmp_path)
    assert loss_of(module, x, y) < before - 0.05


def test_the_surrogate_settings_reach_every_neuron_train_and_are_reloaded(
    tiny_datamodule, batch, tmp_path: Path
) -> None:
    x, y = batch
    module = make_module(tiny_datamodule, detach_reset=True, surrogate_width=2.0)
    wanted = Surrogate(width=2.0, detach_reset=True)
    neurons = module.snn.neuron_layers().values()
    assert neurons and all(neuron.surrogate == wanted for neuron in neurons)
    before = loss_of(module, x, y)
    trainer = fit(module, x, y, steps=20, root=tmp_path)
    assert loss_of(module, x, y) < before - 0.05
    trainer.save_checkpoint(tmp_path / "surrogate.ckpt")
    loaded = SNNFinetuneModule.load_from_checkpoint(tmp_path / "surrogate.ckpt")
    assert all(neuron.surrogate == wanted for neuron in loaded.snn.neuron_layers().values())
    default = make_module(tiny_datamodule).snn.neuron_layers().values()
    assert all(neuron.surrogate == Surrogate() for neuron in default)


def test_a_loss_over_several_timesteps_averages_their_cross_entropies(
    tiny_datamodule, batch, tmp_path: Path
) -> None:
    x, y = batch
    module = make_module(tiny_datamodule, loss_timesteps=[2, 4])
    with torch.no_grad():
        trace = module(x)
        expected = (module.criterion(trace[1] / 2, y) + module.criterion(trace[3] / 4, y)) / 2
        assert torch.equal(module.loss(trace, y), expected)
        assert not torch.equal(expected, module.criterion(trace[3] / 4, y))
    before = float(expected)
    fit(module, x, y, steps=10, root=tmp_path)
    with torch.no_grad():
        assert float(module.loss(module(x), y)) < before - 0.05


def test_distillation_pulls_the_snn_towards_the_teacher_and_stays_out_of_checkpoints(
    tiny_datamodule, batch, tmp_path: Path
) -> None:
    x, y = batch
    torch.manual_seed(1)
    teacher = build_model(arch="cifarnet", num_classes=10, widths=[4, 8, 8, 8]).eval()
    with pytest.raises(ValueError, match=r"needs the ANN as teacher"):
        fit(make_module(tiny_datamodule, distill_weight=0.5), x, y, steps=1, root=tmp_path)
    module = make_module(tiny_datamodule, distill_weight=1.0, distill_temperature=2.0,
                         loss_timesteps=[2, 4], teacher=teacher)  # fmt: skip
    with torch.no_grad():
        trace, target = module(x), teacher(x)
        expected = [  # tau^2 KL(p_teacher || p_snn) at tau = 2, per T, averaged
            4 * (target.div(2).softmax(-1) * (target.div(2).log_softmax(-1)
                 - (trace[t - 1] / t / 2).log_softmax(-1))).sum(-1).mean()
            for t in (2, 4)
        ]  # fmt: skip
        before = module.distillation_loss(trace, target)
        assert float(before) == pytest.approx(float(sum(expected) / 2), rel=1e-5)
    fit(module, x, y, steps=10, root=tmp_path)
    with torch.no_grad():
        assert float(module.distillation_loss(module(x), target)) < float(before) / 2
    assert not any(k.startswith("_teacher") for k in module.state_dict())
    trainer = fit(module, x, y, steps=1, root=tmp_path)
    trainer.save_checkpoint(tmp_path / "kd.ckpt")
    loaded = SNNFinetuneModule.load_from_checkpoint(tmp_path / "kd.ckpt", map_location="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.spiking_model()(x, STEPS), module.spiking_model()(x, STEPS))


@pytest.mark.parametrize(("weight", "temperature"), [(-0.1, 4.0), (1.5, 4.0), (0.5, 0.0)])
def test_bad_distillation_settings_are_refused(tiny_datamodule, weight, temperature) -> None:
    with pytest.raises(ValueError, match=r"finetune\.distill\.weight=.* in \[0, 1\]"):
        make_module(tiny_datamodule, distill_weight=weight, distill_temperature=temperature)


@pytest.mark.parametrize("steps", [[], [0, 4], [8]])
def test_loss_timesteps_outside_the_trained_run_are_refused(tiny_datamodule, steps) -> None:
    with pytest.raises(ValueError, match=r"loss_timesteps=.* between 1 and finetune\.timesteps=4"):
        make_module(tiny_datamodule, loss_timesteps=steps)


def test_gradients_reach_weights_thresholds_and_initial_membranes(module, batch) -> None:
    x, y = batch
    module.criterion(module(x)[-1] / STEPS, y).backward()
    pairs = neuron_scale_pairs(module.snn)
    assert pairs
    for neuron, scale in pairs.values():
        assert scale.scale is neuron.threshold  # the layer's output scale is its threshold
        for parameter in (neuron.threshold, neuron.v_init):
            assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0
    weights = [p for name, p in module.snn.named_parameters() if name.endswith("weight")]
    assert len(weights) == 8 and all(float(w.grad.abs().sum()) > 0 for w in weights)  # 7 conv, 1 fc


def test_grid_noise_moves_each_weight_within_half_a_power_of_two_step_of_its_channel() -> None:
    torch.manual_seed(0)
    weight = (
        torch.randn(6, 3, 3, 3)
        * torch.tensor([1e-3, 0.02, 0.3, 1.0, 7.0, 0.0])[:, None, None, None]
    )
    weight.requires_grad_(True)
    steps = grid_steps(weight, 8)
    assert steps.shape == (6, 1, 1, 1)
    assert torch.equal(torch.log2(steps), torch.log2(steps).round())  # powers of two
    peak = weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    live = peak > 0
    assert bool((peak[live] <= 127 * steps[live]).all())  # the grid covers the channel ...
    assert bool((peak[live] > 63.5 * steps[live]).all())  # ... with the finest such step
    noisy = with_grid_noise(weight, 8)
    moved = (noisy - weight).detach()
    assert bool((moved.abs() <= steps / 2).all())
    assert float(moved[:5].abs().min()) > 0 and float(moved[5].abs().max()) == 0.0
    assert float(moved[3].abs().max()) > 0.25 * float(steps[3])  # the whole range is used
    noisy.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))  # straight to the clean weights
    assert not torch.equal(with_grid_noise(weight, 8), noisy)  # drawn anew every call


def test_weight_noise_trains_through_noisy_weights_and_keeps_the_clean_ones(
    tiny_datamodule, batch, tmp_path: Path
) -> None:
    x, y = batch
    module = make_module(tiny_datamodule, weight_noise_bits=3)
    clean = make_module(tiny_datamodule)
    weights = {k: v.detach().clone() for k, v in module.snn.named_parameters()}
    with torch.no_grad():
        assert torch.equal(module(x), clean(x))  # the forward pass (validation, export): clean
        assert not torch.equal(module.training_trace(x), clean.training_trace(x))
        assert torch.equal(clean.training_trace(x), clean(x))
    module.criterion(module.training_trace(x)[-1] / STEPS, y).backward()
    for name, p in module.snn.named_parameters():
        assert torch.equal(p.detach(), weights[name])  # the noise never lands in the module
        if name.endswith("weight"):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0
    module.zero_grad()
    before = loss_of(module, x, y)
    fit(module, x, y, steps=10, root=tmp_path)
    assert loss_of(module, x, y) < before - 0.05
    with pytest.raises(ValueError, match=r"finetune\.weight_noise_bits=1 must be an integer"):
        make_module(tiny_datamodule, weight_noise_bits=1)


def test_per_channel_thresholds_keep_the_spikes_then_train_apart(
    tiny_datamodule, batch, tmp_path: Path
) -> None:
    """``channel_thresholds``: a QCFS net's one threshold per layer becomes one per channel (the
    same network at first), the channels' thresholds learn different values, and the result is
    still an exact IF network that reloads from its checkpoint."""
    x, y = batch
    torch.manual_seed(0)
    qcfs = {**ANN, "activation": "qcfs", "activation_kwargs": {"levels": 4}}
    ann = build_model(**{k: v for k, v in qcfs.items() if k != "arch_kwargs"}, **ANN["arch_kwargs"])
    ann.train()(x)  # the thresholds are set from the first training batch
    snn = convert(ann, tiny_datamodule.calibration_dataloader(), ConversionConfig())
    assert all(n.threshold.dim() == 0 for n in snn.neuron_layers().values())
    converted = runtime_copy(snn)
    module = SNNFinetuneModule(
        snn, timesteps=STEPS, optimizer={"lr": 3e-2}, scheduler="none", channel_thresholds=True,
        structure=snn_structure(qcfs, "subtract", snn.input_shape),
    )  # fmt: skip
    with torch.no_grad():
        assert torch.equal(module.spiking_model()(x, STEPS), converted(x, STEPS))
    convs = [m for m in module.snn.modules() if isinstance(m, torch.nn.Conv2d)]
    pairs = neuron_scale_pairs(module.snn)
    assert len(pairs) == len(convs) == 7  # one after each conv layer
    for (neuron, scale), conv in zip(pairs.values(), convs, strict=True):
        assert neuron.threshold.shape == neuron.v_init.shape == (conv.out_channels, 1, 1)
        assert scale.scale is neuron.threshold and neuron.trainable
    assert thresholds_per_channel(module.snn) == []  # already per channel
    trainer = fit(module, x, y, steps=6, root=tmp_path)
    assert any(n.threshold.unique().numel() > 1 for n in module.snn.neuron_layers().values())
    _, report = export_and_compare(module.spiking_model(), [tmp_path / "ch.nir"], x, y, [1, 4])
    assert report.worst_diff == 0.0 and report.total_divergent == 0
    trainer.save_checkpoint(tmp_path / "ch.ckpt")
    loaded = load_finetuned(tmp_path / "ch.ckpt")
    with torch.no_grad():
        assert torch.equal(loaded.spiking_model()(x, STEPS), module.spiking_model()(x, STEPS))


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_thresholds_and_initial_membranes_step_at_their_own_learning_rate(
    tiny_datamodule, batch, tmp_path: Path, scale: float
) -> None:
    """AdamW's first step moves a parameter by at most its group's lr (by it exactly where the
    gradient is far above eps): ``lr`` for weights and biases, ``lr * neuron_lr_scale`` for
    thresholds and initial membranes."""
    x, y = batch
    lr = 1e-3
    module = make_module(tiny_datamodule, optimizer={"lr": lr, "neuron_lr_scale": scale})
    before = {name: p.detach().clone() for name, p in module.snn.named_parameters()}
    fit(module, x, y, steps=1, root=tmp_path)
    for name, p in module.snn.named_parameters():
        step = float((p.detach() - before[name]).abs().max())  # lr where |grad| >> AdamW's eps
        wanted = lr * scale if name.endswith(("threshold", "v_init")) else lr
        assert step == pytest.approx(wanted, rel=1e-2), name  # float32 rounding
    with pytest.raises(ValueError, match="neuron_lr_scale=-1 must be > 0"):
        make_module(tiny_datamodule, optimizer={"neuron_lr_scale": -1})


def test_thresholds_stay_positive(module) -> None:
    neuron = next(iter(module.snn.neuron_layers().values()))
    with torch.no_grad():
        neuron.threshold.fill_(-1.0)
    refresh(module.snn, 1e-3)
    assert bool((neuron.threshold == 1e-3).all())
    assert torch.equal(neuron.fire_level, neuron.threshold.detach() - neuron.v_init.detach())


def test_fine_tuned_forward_is_the_runtime_and_its_nir_round_trip_exact(
    module, batch, tmp_path: Path
) -> None:
    x, y = batch
    converted = runtime_copy(module.snn)
    fit(module, x, y, steps=4, root=tmp_path)
    plain = module.spiking_model()
    neurons = zip(converted.neuron_layers().values(), plain.neuron_layers().values(), strict=True)
    assert any(not torch.equal(a.threshold, b.threshold) for a, b in neurons)  # thresholds learned
    assert all(
        isinstance(n.threshold, torch.Tensor) and not n.trainable and not n.threshold.requires_grad
        for n in plain.neuron_layers().values()
    )
    trained = module.snn(x, STEPS)  # autograd on: the surrogate-gradient path
    assert trained.requires_grad
    with torch.no_grad():
        assert torch.equal(trained.detach(), plain(x, STEPS))
    paths, report = export_and_compare(plain, [tmp_path / "ft.nir"], x, y, [1, 2, 4])
    assert paths[0].is_file()
    assert report.worst_diff == 0.0 and report.total_divergent == 0


def test_bfloat16_fine_tuning_trains_and_validates_the_float32_runtime(
    module, batch, tmp_path: Path
) -> None:
    x, y = batch
    before = loss_of(module, x, y)
    conv = next(m for m in module.snn.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = []
    hook = conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    trainer = fit(module, x, y, steps=6, root=tmp_path, precision="bf16-mixed")
    assert set(dtypes) == {torch.bfloat16}  # the training forward ran its convolutions in bf16
    assert loss_of(module, x, y) < before
    traces = []
    hook.remove()
    module.snn.register_forward_hook(lambda _m, _i, out: traces.append(out))
    trainer.validate(module, DataLoader(TensorDataset(x, y), len(y)), verbose=False)
    plain = module.spiking_model()
    with torch.no_grad():
        assert torch.equal(traces[0], plain(x, max(module.eval_timesteps)))
    _, report = export_and_compare(plain, [tmp_path / "bf16.nir"], x, y, [1, 2, 4])
    assert report.worst_diff == 0.0 and report.total_divergent == 0


def test_checkpoint_loads_back_without_the_converted_model(module, batch, tmp_path: Path) -> None:
    x, y = batch
    trainer = fit(module, x, y, steps=2, root=tmp_path)
    path = tmp_path / "ft.ckpt"
    trainer.save_checkpoint(path)
    loaded = SNNFinetuneModule.load_from_checkpoint(path, map_location="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.spiking_model()(x, STEPS), module.spiking_model()(x, STEPS))
    thresholds = [n.threshold.shape for n in loaded.snn.neuron_layers().values()]
    assert thresholds[0] == (4, 1, 1)  # per-channel shapes restored into the rebuilt structure


def test_batch_norm_trains_then_folds_into_an_exact_if_network(
    batch, tiny_datamodule, tmp_path: Path
) -> None:
    """finetune.batch_norm: the norms start as the identity, train, and fold into the weights of
    the network that validation measures, checkpoints hold and NIR files describe."""
    x, y = batch
    module = make_module(tiny_datamodule, batch_norm=True)
    norms = module.conv_norms
    assert norms is not None and norms.names  # the converted convolutions: BatchNorm folded
    converted = runtime_copy(module.snn)
    assert module.evaluated_network() is module.snn  # nothing to fold before the first batch
    outputs = []  # the last convolution's, over every pass of the batch (16 images each here)
    name = norms.names[-1]
    hook = module.snn.network.get_submodule(name).register_forward_hook(
        lambda _m, _i, out: outputs.append(out.detach())
    )
    norms.calibrate(module.snn, lambda: module(x))
    hook.remove()
    assert len(outputs) > 1  # several passes: the statistics must cover them all
    var, mean = torch.var_mean(torch.cat(outputs), dim=(0, 2, 3), correction=0)
    norm = norms.norms[name.replace(".", "__")]
    assert torch.allclose(norm.running_mean, mean, atol=1e-5)
    assert torch.allclose(norm.running_var, var, rtol=1e-4, atol=1e-6)
    calibrated = module.spiking_model()  # the identity: folding moves the weights by roundings
    for a, b in zip(converted.parameters(), calibrated.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    start = {key: norm.weight.detach().clone() for key, norm in norms.norms.items()}
    norms.calibrated = False  # as a fresh module: the fit calibrates on its first batch
    before = loss_of(module, x, y)
    trainer = fit(module, x, y, steps=6, root=tmp_path)
    assert norms.calibrated and loss_of(module, x, y) != before
    assert any(not torch.allclose(n.weight, start[k]) for k, n in norms.norms.items())  # trained
    plain = module.spiking_model()
    name = norms.names[0]
    norm = norms.norms[name.replace(".", "__")]
    raw, folded = (net.network.get_submodule(name) for net in (module.snn, plain))
    with torch.no_grad():  # folded: the norm's inference form after the trained convolution
        image = x.to(memory_format=torch.channels_last)
        assert torch.allclose(folded(image), norm.eval()(raw(image)), atol=1e-5)
        norm.train()
    traces = []
    module.snn.register_forward_hook(lambda m, _i, out: traces.append((m, out)))
    trainer.validate(module, DataLoader(TensorDataset(x, y), len(y)), verbose=False)
    ((network, trace),) = traces  # a folded copy (its hook copied with it), not the trained one
    assert network is not module.snn
    with torch.no_grad():
        assert torch.equal(trace, plain(x, max(module.eval_timesteps)))
    path = tmp_path / "bn.ckpt"
    trainer.save_checkpoint(path)
    assert not any(k.startswith("conv_norms.") for k in torch.load(path)["state_dict"])
    loaded = SNNFinetuneModule.load_from_checkpoint(path, map_location="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.spiking_model()(x, STEPS), plain(x, STEPS))
    assert loaded.conv_norms is not None and not loaded.conv_norms.calibrated
    _, report = export_and_compare(plain, [tmp_path / "bn.nir"], x, y, [1, 2, 4])
    assert report.worst_diff == 0.0 and report.total_divergent == 0


class _FoldedAtEpochEnd(L.Callback):
    """The network validation would measure (norms folded) at the end of each training epoch."""

    def __init__(self) -> None:
        self.networks: list[SpikingModel] = []

    def on_train_epoch_end(self, _trainer, module) -> None:
        self.networks.append(module.spiking_model())


def test_batch_norm_epochs_fold_the_norms_for_good(batch, tiny_datamodule, tmp_path: Path) -> None:
    """finetune.batch_norm_epochs=1: the first epoch trains with the norms, the second starts
    from their folded network and trains it plainly; its files are still exact."""
    x, y = batch
    module = make_module(tiny_datamodule, batch_norm=True, batch_norm_epochs=1)
    recorder = _FoldedAtEpochEnd()
    loader = DataLoader(TensorDataset(x.repeat(3, 1, 1, 1), y.repeat(3)), len(y))
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[recorder],
    )  # fmt: skip
    with torch.no_grad():
        start = module.snn(x, STEPS)
    trainer.fit(module, train_dataloaders=loader)
    assert module.conv_norms is None  # folded in and gone: the second epoch had none
    first, second = recorder.networks
    trained = runtime_copy(module.snn)
    with torch.no_grad():
        assert not torch.equal(first(x, STEPS), start)  # the first epoch trained (with norms)
        assert not torch.equal(second(x, STEPS), first(x, STEPS))  # the second trained on
        assert torch.equal(second(x, STEPS), trained(x, STEPS))  # no norms left to fold
    path = tmp_path / "folded.ckpt"
    trainer.save_checkpoint(path)
    loaded = SNNFinetuneModule.load_from_checkpoint(path, map_location="cpu")
    with torch.no_grad():
        assert torch.equal(loaded.spiking_model()(x, STEPS), trained(x, STEPS))
    _, report = export_and_compare(trained, [tmp_path / "folded.nir"], x, y, [1, 2, 4])
    assert report.worst_diff == 0.0 and report.total_divergent == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_norm_epochs": 2}, r"batch_norm_epochs=2 needs the batch norms"),
        ({"batch_norm": True, "batch_norm_epochs": 0}, r"batch_norm_epochs=0 must be a number"),
    ],
)
def test_bad_batch_norm_epochs_fail(tiny_datamodule, settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_module(tiny_datamodule, **settings)


class _RecordSteps(L.Callback):
    """The SNN's parameters after each optimizer step (before any callback listed after it)."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, _trainer, module, *_args) -> None:
        self.steps.append([p.detach().clone() for p in module.snn.parameters()])


def test_weight_averaging_keeps_the_average_as_an_exact_if_network(
    module, batch, tmp_path: Path
) -> None:
    """With SNNWeightAverage the fit ends on the EMA of the steps' weights, every fire level is
    its averaged threshold minus initial membrane bit for bit, and the network is the runtime's
    (exact NIR round trip)."""
    x, y = batch
    with pytest.raises(ValueError, match=r"finetune\.weight_average=1\.0 must be in \(0, 1\)"):
        SNNWeightAverage(1.0)
    steps, decay = _RecordSteps(), 0.5
    loader = DataLoader(TensorDataset(x.repeat(4, 1, 1, 1), y.repeat(4)), len(y))
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
        callbacks=[steps, SNNWeightAverage(decay)],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    average = steps.steps[0]
    for later in steps.steps[1:]:
        average = [decay * a + (1 - decay) * p for a, p in zip(average, later, strict=True)]
    kept = [p.detach() for p in module.snn.parameters()]
    assert all(torch.allclose(k, a, atol=1e-6) for k, a in zip(kept, average, strict=True))
    assert any(not torch.allclose(k, p) for k, p in zip(kept, steps.steps[-1], strict=True))
    for neuron in module.snn.neuron_layers().values():
        assert torch.equal(neuron.fire_level, neuron.threshold.detach() - neuron.v_init.detach())
    trainer.save_checkpoint(tmp_path / "ema.ckpt")  # the average's buffers: averaged, recomputed
    state = torch.load(tmp_path / "ema.ckpt", weights_only=True)["state_dict"]
    for name in module.snn.neuron_layers():
        stem = f"snn.network.{name}."
        fire_level = state[stem + "threshold"] - state[stem + "v_init"]
        assert torch.equal(state[stem + "fire_level"], fire_level)
    _, report = export_and_compare(module.spiking_model(), [tmp_path / "ema.nir"], x, y, [1, 4])
    assert report.worst_diff == 0.0 and report.total_divergent == 0


class _RecordValidation(L.Callback):
    """Each epoch's validation figures, as the trainer holds them after validation."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: L.Trainer, _module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics.items()
        self.epochs[trainer.current_epoch] = {k: float(v) for k, v in metrics if "val/" in k}


def test_each_checkpoint_keeps_the_validation_figures_of_its_epoch(
    module, tiny_datamodule, tmp_path: Path
) -> None:
    """A kept (best) checkpoint reports its own epoch's validation accuracy, not the last's."""
    recorder = _RecordValidation()
    saver = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, filename="e{epoch}", auto_insert_metric_name=False, save_top_k=-1
    )
    trainer = L.Trainer(
        max_epochs=3, limit_train_batches=2, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder, saver], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=tiny_datamodule)
    kept = {
        epoch: SNNFinetuneModule.load_from_checkpoint(
            tmp_path / f"e{epoch}.ckpt"
        ).validation_metrics
        for epoch in range(3)
    }
    assert kept == recorder.epochs
    assert {f"val/snn_acc_T{t}" for t in (1, 2, 4)} <= set(kept[0])
    assert kept[0] != kept[2]  # the figures moved with training: a checkpoint holds its own


def test_train_py_fine_tunes_and_reports_snn_test_accuracy(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        "finetune=snn",
        "finetune.timesteps=2",
        "finetune.distill.weight=0.5",  # with the run's ANN as teacher
        "finetune.precision=bf16-mixed",  # its checkpoints' .nir files still exact
        "finetune.weight_noise_bits=8",  # trained on noisy weights, exported clean: still exact
        "finetune.batch_norm=true",  # trained with batch norms, exported folded: still exact
        "conversion.timesteps=[1,2,4]",
        "conversion.calibration.batches=2",
        "conversion.eval_subset=16",
    )
    metrics = train(cfg)
    folder = tmp_path / "run" / "checkpoints" / "finetune"
    checkpoints = sorted(folder.glob("*.ckpt"))
    assert {p.name for p in checkpoints} == {"epoch_000.ckpt", "last.ckpt"}
    assert all(p.with_suffix(".nir").is_file() for p in checkpoints)
    assert metrics["finetune/nir/max_abs_diff"] == 0.0
    assert {"finetune/loss_epoch", "finetune/acc", "finetune/distill_loss", "val/snn_acc_T2",
            "val/snn_acc_T4"} <= set(metrics)  # fmt: skip
    # the gaps' reference: the tested ANN in float32, as the SNN runs (test/acc: bf16-mixed
    # where the CPU has bfloat16)
    assert metrics["test/ann_acc_float32"] == pytest.approx(metrics["test/acc"], abs=0.02)
    for t in (1, 2, 4):
        assert 0.0 <= metrics[f"test/snn_acc_T{t}"] <= 1.0
        gap = metrics["test/ann_acc_float32"] - metrics[f"test/snn_acc_T{t}"]
        assert metrics[f"test/snn_gap_T{t}"] == pytest.approx(gap, abs=1e-6)
    loaded = SNNFinetuneModule.load_from_checkpoint(checkpoints[0], map_location="cpu")
    assert isinstance(loaded.spiking_model().network.get_submodule("2.0"), IFNeuron)
    # a checkpoint replaced by a better one takes its .nir file with it (no orphans)
    savers = [hydra.utils.instantiate(node) for node in cfg.finetune.callbacks.values()]
    assert sum(isinstance(c, CheckpointWithNIR) for c in savers) == 2


def test_train_py_fine_tunes_with_a_weight_average_and_exports_the_average(
    train_cfg, tmp_path: Path
) -> None:
    """finetune.weight_average: the checkpoints hold the average (the last step's weights beside
    it), their .nir files are exported from it and re-execute exactly; a bad decay fails first."""
    with pytest.raises(ValueError, match=r"finetune\.weight_average=2\.0"):
        train(train_cfg("finetune=snn", "finetune.weight_average=2.0", "trainer.max_epochs=1000"))
    cfg = train_cfg("finetune=snn", "finetune.timesteps=2", "finetune.weight_average=0.9",
                    "conversion.timesteps=[1,2]", "conversion.calibration.batches=1",
                    "conversion.eval_subset=8")  # fmt: skip
    metrics = train(cfg)
    assert metrics["finetune/nir/max_abs_diff"] == 0.0
    folder = tmp_path / "run" / "checkpoints" / "finetune"
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    state, last = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(state[k], last[k]) for k in state if k.endswith(".weight"))
    for key in (k for k in state if k.endswith(".fire_level")):
        stem = key[: -len("fire_level")]
        assert torch.equal(state[key], state[stem + "threshold"] - state[stem + "v_init"])
    # the run's file executes as the checkpoint's average does, not as the last step's weights
    x, y = torch.rand(3, 3, 32, 32), torch.zeros(3, dtype=torch.long)
    average = load_finetuned(folder / "last.ckpt")
    executor = Executor(load_nir(folder / "last.nir"))
    report = compare(executor, average.spiking_model(), [(x, y)], [1, 2])
    assert report.worst_diff == 0.0 and report.total_divergent == 0
    average.load_state_dict(last)
    report = compare(executor, average.spiking_model(), [(x, y)], [1, 2])
    assert report.worst_diff > 0.0


def test_train_py_reports_the_converted_snn_without_fine_tuning(train_cfg) -> None:
    metrics = train(train_cfg("conversion.timesteps=[1,2]", "conversion.calibration.batches=1",
                              "conversion.eval_subset=8"))  # fmt: skip
    assert {"test/acc", "test/snn_acc_T1", "test/snn_acc_T2", "test/snn_gap_T2"} <= set(metrics)
    assert not any(k.startswith("finetune/") for k in metrics)


def test_fine_tuning_without_the_conversion_group_fails_at_once(train_cfg) -> None:
    with pytest.raises(ValueError, match="~conversion"):
        train(train_cfg("finetune=snn", "~conversion"))


def test_train_py_fine_tunes_a_given_checkpoint_without_fitting(
    train_cfg, tiny_archive: Path, tmp_path: Path
) -> None:
    ann = train(train_cfg("~conversion"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    converted = [
        "conversion.timesteps=2",
        "conversion.calibration.batches=1",
        "conversion.eval_subset=8",
    ]  # fmt: skip  (a bare T reads as [2] everywhere)
    train(train_cfg("train=false", f"ckpt_path={checkpoint}", *converted))  # test and convert
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["checkpoint"] == str(checkpoint)  # not its restored best (epoch_000.ckpt)
    assert summary["snn_source"] == "the given ANN checkpoint, converted"
    cfg = train_cfg("train=false", "finetune=snn", "finetune.timesteps=1",
                    f"finetune.start_from={checkpoint}", *converted,
                    "finetune.detach_reset=true", "finetune.surrogate_width=0.5",
                    "conversion.calibration.per_channel=false",
                    "finetune.channel_thresholds=true")  # fmt: skip
    metrics = train(cfg)
    assert metrics["test/acc"] == ann["test/acc"]  # the given ANN was tested, not fresh weights
    assert {"finetune/acc", "test/snn_acc_T2", "test/snn_gap_T2"} <= set(metrics)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["checkpoint"] == str(checkpoint)  # the ANN the run started from
    folder = tmp_path / "run" / "checkpoints" / "finetune"
    finetuned = load_finetuned(folder / "last.ckpt")  # the setting reached the neurons
    wanted = Surrogate(width=0.5, detach_reset=True)
    assert all(n.surrogate == wanted for n in finetuned.snn.neuron_layers().values())
    # converted with one threshold per layer, fine-tuned (and checked below) with one per channel
    assert all(n.threshold.dim() > 0 for n in finetuned.snn.neuron_layers().values())
    metadata = load_nir(folder / "last.nir").metadata
    assert metadata["per_channel"] == "false" and metadata["finetune_channel_thresholds"] == "true"
    assert metadata["timesteps"] == "1,2"  # checked at the trained T too, not only conversion's
    # verify_nir.py runs the fine-tuned checkpoint itself (not a fresh conversion of an ANN)
    verify = [sys.executable, "scripts/verify_nir.py", str(folder / "last.nir"), "--timesteps",
              "1", "2", "--num-images", "8", "--archive", str(tiny_archive), "--checkpoint",
              str(folder / "last.ckpt")]  # fmt: skip
    result = subprocess.run(verify, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "round trip exact" in result.stdout
    result = subprocess.run(
        [*verify, "conversion.correction.timesteps=0"], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "is a fine-tuned SNN" in result.stderr and "conversion.correction.timesteps" in (
        result.stderr
    )
    # scripts/layer_errors.py measures the fine-tuned network itself, which no setting changes
    errors = [sys.executable, "scripts/layer_errors.py", str(folder / "last.ckpt"), "--timesteps",
              "2", "--num-images", "8", "--out", str(tmp_path / "layers")]  # fmt: skip
    result = subprocess.run(errors, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((tmp_path / "layers" / "last.ckpt.layers_T2.json").read_text())["images"] == 8
    result = subprocess.run([*errors, "conversion.v_init=0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1 and "is a fine-tuned SNN" in result.stderr
    # scripts/verify_run.sh: the same file on the whole test set, then its loihi2 deployment
    data = ["data.source=jpeg", f"data.archive={tiny_archive}", f"data.cache_dir={tmp_path / 'c'}",
            "data.val_size=40"]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "VERIFY_T": "1 2", "DEPLOY_T": "2"}
    run = ["bash", "scripts/verify_run.sh", str(tmp_path / "run"), "last", *data]
    result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "round trip exact" in result.stdout
    (deployed,) = json.loads((tmp_path / "run" / "last_deploy.json").read_text())["accuracy"]
    assert deployed["T"] == 2 and deployed["images"] == 80 and "loihi2_acc" in deployed
    run[3] = "epoch_999"
    result = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "No epoch_999.ckpt" in result.stderr
    # a fine-tuning checkpoint as start_from is trained further (not an ANN converted again):
    # with lr 0 its network comes back unchanged, and the ANN it came from is tested
    earlier = shutil.copy(folder / "last.ckpt", tmp_path / "earlier.ckpt")
    again = ["train=false", "finetune=snn", "finetune.timesteps=2",
             f"finetune.start_from={earlier}", "conversion.timesteps=[2]",
             "conversion.eval_subset=8", "finetune.optimizer.lr=0"]  # fmt: skip
    with pytest.raises(ValueError, match=r"ckpt_path=ANN\.ckpt"):
        train(train_cfg(*again))
    with pytest.raises(ValueError, match=r"distillation .* ckpt_path=ANN\.ckpt"):
        train(train_cfg(*again, "test=false", "finetune.distill.weight=0.5"))
    with pytest.raises(ValueError, match="train=false"):
        train(train_cfg(*again[1:], f"ckpt_path={checkpoint}"))
    # trained on direct input: further training on Poisson spikes was neither refused nor noted
    with pytest.raises(ValueError, match=r"trained on direct input, but conversion\.encoding"):
        train(train_cfg(*again, f"ckpt_path={checkpoint}", "conversion.encoding=poisson"))
    metrics = train(train_cfg(*again, f"ckpt_path={checkpoint}"))
    assert metrics["test/acc"] == ann["test/acc"] and "test/snn_gap_T2" in metrics
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["checkpoint"] == str(checkpoint)  # the ANN the gaps count against
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        before = load_finetuned(earlier).spiking_model()(x, 2)
        assert torch.equal(load_finetuned(folder / "last.ckpt").spiking_model()(x, 2), before)
    # finetune.distill.teacher: the network of an ANN file (any model) as teacher, which lets a
    # continued run distil without ckpt_path; a missing file fails before any work
    teacher = distill_teacher(None, str(checkpoint), torch.device("cpu"))
    state = read_checkpoint(checkpoint)["state_dict"]
    assert all(torch.equal(v, state[f"net.{k}"]) for k, v in teacher.state_dict().items())
    distil = [*again, "test=false", "finetune.distill.weight=0.5"]
    with pytest.raises(FileNotFoundError, match=r"finetune\.distill\.teacher=.*missing\.ckpt"):
        train(train_cfg(*distil, f"finetune.distill.teacher={tmp_path / 'missing.ckpt'}"))
    metrics = train(train_cfg(*distil, f"finetune.distill.teacher={checkpoint}"))
    assert "finetune/distill_loss" in metrics


def test_a_bad_surrogate_width_fails_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"finetune\.surrogate_width=-1\.0 must be > 0"):
        train(train_cfg("finetune=snn", "finetune.surrogate_width=-1", "trainer.max_epochs=1000"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("neuron_lr_scale=0", r"neuron_lr_scale=0 must be > 0"),
        ("name=adam", r"'adam': use adamw"),
        (
            "lr=-1",
            r"finetune\.optimizer\.lr=-1 must be a finite number >= 0",
        ),  # was torch's, after the fit
    ],
)
def test_bad_optimizer_settings_fail_before_the_fit(train_cfg, override, message) -> None:
    with pytest.raises(ValueError, match=message):
        train(train_cfg("finetune=snn", f"finetune.optimizer.{override}", "trainer.max_epochs=9"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("timesteps=abc", r"finetune\.timesteps='abc' must be an integer in \[1, 4096\]"),
        ("epochs=0", r"finetune\.epochs=0 must be an integer >= 1"),
        ("scheduler=step", r"finetune\.scheduler='step' must be cosine or none"),
        ("train_batches=-1", r"finetune\.train_batches=-1 must be an integer >= 1, a fraction"),
        ("train_batches=1.5", r"finetune\.train_batches=1\.5 must be an integer >= 1, a fraction"),
        ("min_threshold=0", r"finetune\.min_threshold=0 must be a finite number > 0"),
    ],
)
def test_bad_fine_tuning_values_fail_before_the_fit(train_cfg, override, message) -> None:
    """Each of these failed only after the ANN fit and the conversion, or named no key."""
    with pytest.raises(ValueError, match=message):
        train(train_cfg("finetune=snn", f"finetune.{override}", "trainer.max_epochs=1000"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+finetune.neuron_lr_scale=10",
            r"finetune\.neuron_lr_scale is not a setting of the finetune",
        ),
        ("+finetune.optimizer.beta1=0.8", r"finetune\.optimizer\.beta1 is not a setting"),
        ("+finetune.distill.tau=2", r"finetune\.distill\.tau is not a setting .* known: teacher"),
        ("+model.distill.tau=2", r"model\.distill\.tau is not a setting"),
    ],
)
def test_an_unknown_fine_tuning_key_fails_before_the_fit(train_cfg, override, message) -> None:
    """Hydra's hint for a wrong key (``+finetune.neuron_lr_scale``: it lives under optimizer)
    made a setting that nothing read (the model's through Hydra's instantiation)."""
    with pytest.raises((ValueError, hydra.errors.InstantiationException), match=message):
        train(train_cfg("finetune=snn", override, "trainer.max_epochs=1000"))


def test_the_fine_tuning_keys_are_the_groups() -> None:
    group = OmegaConf.load(ROOT / "configs" / "finetune" / "snn.yaml")
    assert set(group) == FINETUNE_KEYS and set(group.distill) == DISTILL_KEYS


def test_bad_weight_noise_bits_fail_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"finetune\.weight_noise_bits=32 must be an integer"):
        train(train_cfg("finetune=snn", "finetune.weight_noise_bits=32", "trainer.max_epochs=1000"))


def test_batch_norm_with_a_weight_average_fails_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"finetune\.batch_norm=true and finetune\.weight_average"):
        train(train_cfg("finetune=snn", "finetune.batch_norm=true", "finetune.weight_average=0.9",
                        "trainer.max_epochs=1000"))  # fmt: skip


def test_batch_norm_epochs_without_batch_norm_fail_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"finetune\.batch_norm_epochs=3 needs the batch norms"):
        train(train_cfg("finetune=snn", "finetune.batch_norm_epochs=3", "trainer.max_epochs=1000"))


def test_bad_loss_timesteps_fail_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"loss_timesteps=\[2, 8\]"):
        train(train_cfg("finetune=snn", "finetune.timesteps=4", "finetune.loss_timesteps=[2,8]",
                        "trainer.max_epochs=1000"))  # fmt: skip


def test_an_unknown_fine_tuning_precision_fails_before_the_fit(train_cfg) -> None:
    with pytest.raises(ValueError, match=r"finetune\.precision='16-mixed'.*bf16-mixed"):
        train(train_cfg("finetune=snn", "finetune.precision=16-mixed", "trainer.max_epochs=1000"))


def test_fine_tuning_without_a_fit_needs_a_checkpoint_file(train_cfg, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"finetune\.start_from=FILE\.ckpt"):
        train(train_cfg("train=false", "finetune=snn"))
    with pytest.raises(FileNotFoundError, match=r"none\.ckpt"):
        train(train_cfg("finetune=snn", f"finetune.start_from={tmp_path / 'none.ckpt'}"))


def test_an_ann_file_to_fine_tune_with_a_fit_fails_before_it(
    train_cfg, relu_checkpoint: Path
) -> None:
    """The fit's own best was fine-tuned and the given file ignored without a word."""
    with pytest.raises(ValueError, match=r"is an ANN checkpoint to fine-tune, but train=true"):
        train(train_cfg("finetune=snn", f"finetune.start_from={relu_checkpoint}",
                        "trainer.max_epochs=1000"))  # fmt: skip


def test_the_finetune_benchmark_times_both_variants() -> None:
    script = ROOT / "scripts" / "benchmark_finetune.py"
    args = ["--arch", "cifarnet", "--batch", "2", "--timesteps", "2", "--rounds", "1"]
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)  # fmt: skip
    assert "32-true" in done.stdout and "bf16-mixed" in done.stdout
    assert "32-true time / bf16-mixed time" in done.stdout
    kernel = [*args, "--compare", "kernel"]
    done = subprocess.run([sys.executable, script, *kernel], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)  # fmt: skip
    assert "tensor ops time / CPU kernels time" in done.stdout
    norms = [*args, "--compare", "batch_norm", "--precision", "32-true"]
    done = subprocess.run([sys.executable, script, *norms], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)  # fmt: skip
    assert "32-true" in done.stdout and "batch norms time / no batch norms time" in done.stdout


def test_ddp_processes_calibrate_the_fine_tuning_norms_on_all_their_batches(tmp_path) -> None:
    """Each DDP process set its batch norms from its own batch, and DDP never broadcasts
    parameters after its start: the replicas trained from different norms for good."""
    import socket

    from tests import ddp_norms_worker as worker

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        init = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    out = tmp_path / "norms"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.ddp_norms_worker", str(rank), "2",
                               init, str(out)], cwd=ROOT) for rank in range(2)]  # fmt: skip
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    snn = worker.network()
    alone = ConvNorms(snn)
    both = torch.cat([worker.batch(0), worker.batch(1)])
    alone.calibrate(snn, lambda: snn(both, 2))
    for key, value in alone.state_dict().items():
        for state in ranks:
            assert torch.allclose(state[key].double(), value.double(), atol=1e-6), key


def test_the_stage_checkpoints_whatever_the_fit_validates_and_its_files_are_no_anns(
    train_cfg, relu_checkpoint: Path, tmp_path: Path
) -> None:
    """trainer.check_val_every_n_epoch=2 reached the fine-tuning trainer: one epoch, no
    validation, no checkpoint, no .nir, exit 0. A fine-tuned checkpoint given where an ANN's is
    needed (a distillation teacher, scripts/convert.py) failed late with KeyError: 'loss'."""
    from neurocuda.checkpoint import load_ann

    small = ["conversion.timesteps=[1]", "conversion.calibration.batches=1", "test=false"]
    train(train_cfg("train=false", "finetune=snn", f"finetune.start_from={relu_checkpoint}",
                    "finetune.timesteps=1", "finetune.epochs=1", "finetune.train_batches=2",
                    "trainer.check_val_every_n_epoch=2", *small))  # fmt: skip
    (kept,) = (tmp_path / "run" / "checkpoints" / "finetune").glob("epoch_*.ckpt")
    assert kept.with_suffix(".nir").is_file()
    with pytest.raises(ValueError, match=r"finetune\.distill\.teacher=.* is a fine-tuned SNN"):
        train(train_cfg("finetune=snn", "finetune.distill.weight=0.5",
                        f"finetune.distill.teacher={kept}", "trainer.max_epochs=1000"))  # fmt: skip
    with pytest.raises(ValueError, match=r"checkpoint=.* is a fine-tuned SNN's checkpoint"):
        load_ann(kept)
    done = subprocess.run([sys.executable, "scripts/convert.py", str(kept)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is a fine-tuned SNN's checkpoint" in done.stderr


def test_a_training_steps_draws_do_not_depend_on_the_global_generator(tiny_datamodule) -> None:
    """Weight noise and Poisson input drew from the global generator, whose state checkpoints do
    not keep: a resumed run's weights differed from the uninterrupted run's (up to 4.6e-6)."""
    module = make_module(tiny_datamodule, weight_noise_bits=3, encoding="poisson")
    x, _ = next(iter(tiny_datamodule.train_dataloader()))
    torch.manual_seed(1)  # the run's seed (seed_everything, again in a resumed process)
    first = module.training_trace(x)
    torch.rand(1000)  # the global generator moved on: a restarted process's is elsewhere
    assert torch.equal(module.training_trace(x), first)
