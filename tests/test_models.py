"""Model shapes, parameter counts, conversion-friendly structure and a few-step fit of each."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from neurocuda.data import CIFAR10DataModule
from neurocuda.models import Add, build_model
from neurocuda.models.qcfs import QCFS
from neurocuda.training import ClassifierModule

PARAMS = {"cifarnet": 1_166_506, "resnet18": 11_173_962, "resnet20": 272_474, "vgg16": 14_724_042}


@pytest.mark.parametrize("arch", sorted(PARAMS))
def test_output_shape_and_parameter_count(arch: str) -> None:
    model = build_model(arch, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch]


@pytest.mark.parametrize("arch", sorted(PARAMS))
def test_built_for_conversion(arch: str) -> None:
    modules = list(build_model(arch).modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in modules)
    assert any(isinstance(m, nn.ReLU) for m in modules)
    assert any(isinstance(m, nn.Flatten) for m in modules)
    if arch.startswith("resnet"):
        assert any(isinstance(m, Add) for m in modules)


@pytest.mark.parametrize("arch", ["resnet18", "resnet20"])
def test_zero_init_residual_starts_every_block_at_its_shortcut(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if hasattr(m, "shortcut")]
    assert blocks and all(float(b.bn2.weight.abs().sum()) == 0.0 for b in blocks)
    x = torch.randn(2, blocks[0].conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(blocks[0](x), blocks[0].act2(blocks[0].shortcut(x)))
    default = build_model(arch)  # the default keeps BatchNorm's unit scales
    assert all(float(m.bn2.weight.min()) == 1.0 for m in default.modules() if hasattr(m, "bn2"))


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="Unknown model 'resnet99'"):
        build_model("resnet99")
    with pytest.raises(ValueError, match=r"model\.activation"):
        build_model("cifarnet", activation="swish")


def quiet_trainer(**settings: int) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


@pytest.mark.parametrize("arch", sorted(PARAMS))
def test_few_step_fit(arch: str, tiny_datamodule: CIFAR10DataModule) -> None:
    L.seed_everything(0)
    model = ClassifierModule(arch=arch, optimizer={"lr": 0.02})
    before = [p.detach().clone() for p in model.net.parameters()]
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(model, datamodule=tiny_datamodule)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    changed = [not torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True)]
    assert all(changed)


@pytest.mark.parametrize("activation", ["relu", "qcfs"])
def test_compiled_training_forward_computes_the_eager_one(
    activation: str, tiny_datamodule: CIFAR10DataModule
) -> None:
    """model.compile: a fit (its first step eager, so QCFS thresholds start from its batch)
    compiles one training graph without breaks, evaluation stays eager, the state dict keeps
    the eager module's keys, and (ReLU) outputs and gradients equal the eager module's on the
    same weights. With QCFS the compiled BatchNorm's reordered sums move a few values across
    quantization levels, so the whole net is compared only through its quantizer (below)."""
    settings = {"arch_kwargs": {"widths": [8, 16, 16, 32]}, "activation": activation}
    compiled = ClassifierModule(**settings, compile=True)
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    quiet_trainer(max_steps=3, limit_val_batches=1).fit(compiled, datamodule=tiny_datamodule)
    assert counters["stats"]["unique_graphs"] == graphs + 1
    assert sum(counters["graph_break"].values()) == breaks
    eager = ClassifierModule(**settings)
    eager.load_state_dict(compiled.state_dict())  # strict: the same keys
    if activation == "qcfs":
        return
    x = next(iter(tiny_datamodule.train_dataloader()))[0].contiguous(
        memory_format=torch.channels_last
    )
    results = []
    for module in (compiled, eager):
        module.train().zero_grad()
        out = module.training_forward(x)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad for p in module.net.parameters()]))
    assert counters["stats"]["unique_graphs"] == graphs + 1  # the fit's graph, reused
    (out_compiled, grads_compiled), (out_eager, grads_eager) = results
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_compiled, grads_eager, strict=True):  # sums in another order
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compiled_qcfs_quantizes_as_the_cpu_kernels() -> None:
    """Under torch.compile QCFS runs its tensor operations: the CPU kernels' levels exactly."""
    torch.manual_seed(0)
    act = QCFS(levels=8, threshold=2.62).train()
    x = torch.randn(16, 16, 32, 32).mul(2).contiguous(memory_format=torch.channels_last)
    results = []
    for forward in (torch.compile(act.forward), act.forward):
        xk = x.clone().requires_grad_()
        act.zero_grad()
        out = forward(xk)
        out.mul(torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), xk.grad, act.threshold.grad.clone()))
    (y1, gx1, gt1), (y2, gx2, gt2) = results
    assert torch.equal(y1, y2) and torch.equal(gx1, gx2)
    torch.testing.assert_close(
        gt1, gt2, rtol=1e-3, atol=1e-3
    )  # a sum of 262,144 float32s, reordered


def test_compile_without_a_compiler_is_a_clear_error(
    monkeypatch, tiny_datamodule: CIFAR10DataModule
) -> None:
    model = ClassifierModule(arch_kwargs={"widths": [8, 16, 16, 32]}, compile=True)
    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", "")  # loading and evaluating need none: only the fit is refused
    with pytest.raises(RuntimeError, match=r"model\.compile=false"):
        quiet_trainer(max_steps=1).fit(model, datamodule=tiny_datamodule)
    assert model.global_step == 0


def test_checkpoint_rebuilds_without_config(tmp_path, tiny_datamodule: CIFAR10DataModule) -> None:
    model = ClassifierModule(
        arch="resnet20", arch_kwargs={}, optimizer={"name": "adamw", "lr": 1e-3}
    )
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=tiny_datamodule)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = ClassifierModule.load_from_checkpoint(tmp_path / "m.ckpt")
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    restored.eval()
    assert torch.equal(model(x), restored(x))


def test_qcfs_clip_levels_get_their_own_learning_rate_and_weight_decay(
    tiny_datamodule: CIFAR10DataModule,
) -> None:
    optimizer = {"lr": 0.02, "clip_lr_scale": 0.1, "clip_weight_decay": 0.0}
    model = ClassifierModule(
        arch="cifarnet", activation="qcfs", activation_kwargs={"levels": 4}, optimizer=optimizer
    )
    trainer = quiet_trainer(max_steps=4, limit_val_batches=0)
    trainer.fit(model, datamodule=tiny_datamodule)
    weights, clip = trainer.optimizers[0].param_groups
    thresholds = [m.threshold for m in model.net.modules() if isinstance(m, QCFS)]
    assert clip["params"] == thresholds and len(thresholds) > 0
    assert (weights["max_lr"], weights["weight_decay"]) == (0.02, 5e-4)
    assert (clip["max_lr"], clip["weight_decay"]) == (pytest.approx(0.002), 0.0)
    default = ClassifierModule(arch="cifarnet", activation="qcfs")
    assert len(default._parameter_groups({"lr": 0.1, "weight_decay": 5e-4})) == 1
    with pytest.raises(ValueError, match="clip_lr_scale"):
        default._parameter_groups({"lr": 0.1, "weight_decay": 5e-4, "clip_lr_scale": 0})
