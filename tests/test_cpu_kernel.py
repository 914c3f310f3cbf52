"""The compiled CPU kernel (IF layer + scale in one pass) equals the tensor operations exactly."""

from __future__ import annotations

import pytest
import torch

from neurocuda.nir import Executor
from neurocuda.snn import IFNeuron, Surrogate, cpu_kernel
from neurocuda.snn.if_sequence import if_sequence, integrate_and_fire
from neurocuda.snn.layout import empty_steps, to_layout
from neurocuda.snn.trainable import set_trainable
from tests.test_nir_export import T, converted, round_trip


def tensor_ops(x: torch.Tensor, fire: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    spikes = empty_steps(x[0], x.shape[0])
    integrate_and_fire(x, fire, -theta, spikes, empty_steps(x[0], 1), torch.empty_like(x[0]))
    return spikes.mul_(theta)


def inputs(shape: tuple[int, ...], dtype: torch.dtype, per_channel: bool, grid: bool = False):
    """Input ``[T, B, ...]`` in the runtime's layout, ~half the neurons firing, ``v_init`` != 0.
    ``grid``: values on a grid of 1/4, so membranes often equal the fire level exactly (strict
    ``>``); otherwise random floats (the order of the additions shows in the roundings)."""
    extra = [1] * (len(shape) - 3)
    channels = shape[2] if per_channel else 1
    if grid:
        x = to_layout(torch.randint(-3, 5, shape).to(dtype) / 4)
        theta = torch.randint(2, 5, (channels, *extra)).to(dtype) / 4
    else:
        x = to_layout(torch.randn(shape, dtype=dtype) * 2)
        theta = torch.rand(channels, *extra, dtype=dtype) + 0.5
    theta = theta if per_channel else theta.reshape(())
    return x, theta - 0.5 * theta, theta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("per_channel", "grid"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize(
    "shape", [(8, 3, 16, 9, 7), (4, 2, 300, 1, 1), (1, 2, 5, 3, 3), (6, 3, 10), (5, 600, 33)]
)
def test_kernel_equals_the_tensor_operations(shape, dtype, per_channel, grid) -> None:
    torch.manual_seed(0)
    x, fire, theta = inputs(shape, dtype, per_channel, grid)
    assert cpu_kernel.applies(x, fire, theta)
    out = empty_steps(x[0], x.shape[0]).fill_(float("nan"))
    expected = tensor_ops(x, fire, theta)
    assert cpu_kernel.fire_and_scale(x, fire, -theta, theta, out) is out
    assert torch.equal(out, expected)
    assert 0 < (out != 0).sum() < out.numel()  # some neurons fire, some do not


def test_the_additions_keep_their_order() -> None:
    """``u + (x + (-theta) s)`` and ``(u + x) + (-theta) s`` round apart now and then; with each
    neuron's fire level at the smaller of the two, a kernel that reordered them would flip its
    spike at t = 1."""
    g = torch.Generator().manual_seed(0)
    first = 1 + torch.rand(4096, generator=g)  # fires at t = 0 (the fire level is below 1)
    second = torch.rand(4096, generator=g)
    theta = torch.ones(4096)
    contract = first + (second + -theta)
    reordered = (first + second) + -theta
    assert (contract != reordered).sum() > 100  # the test can fail
    fire = torch.minimum(contract, reordered)
    x = torch.stack([first, second]).unsqueeze(1)  # [T=2, B=1, 4096 features]
    out = cpu_kernel.fire_and_scale(x, fire, -theta, theta, torch.empty_like(x))
    assert torch.equal(out, tensor_ops(x, fire, theta))
    assert torch.equal(out[1, 0] > 0, contract > reordered)


def test_constant_input_is_read_once_per_step() -> None:
    torch.manual_seed(0)
    x, fire, theta = inputs((1, 4, 16, 8, 8), torch.float32, True)
    steps = x[0].unsqueeze(0).expand(T, *x.shape[1:])  # a constant current: stride 0 over T
    out = empty_steps(x[0], T)
    assert torch.equal(
        cpu_kernel.fire_and_scale(steps, fire, -theta, theta, out), tensor_ops(steps, fire, theta)
    )


def test_what_the_kernel_does_not_take() -> None:
    x, fire, theta = inputs((4, 2, 8, 3, 3), torch.float32, True)
    standard = x.contiguous()  # standard layout: channels are not innermost
    assert not cpu_kernel.applies(standard, fire, theta)
    assert not cpu_kernel.applies(x.half(), fire, theta)
    assert not cpu_kernel.applies(x, torch.ones(3, 1, 1), theta)  # 3 values for 8 channels
    # one value per position, not per channel, though H x W = 9 could pass for 9 channels
    nine = inputs((4, 2, 9, 3, 3), torch.float32, True)[0]
    assert not cpu_kernel.applies(nine, torch.ones(1, 3, 3), torch.ones(()))
    assert not cpu_kernel.applies(nine, torch.ones(9), torch.ones(()))  # broadcasts along W
    assert cpu_kernel.applies(nine, torch.ones(1, 9, 1, 1), torch.ones(9, 1, 1))
    with pytest.raises(ValueError, match="channels last"):
        cpu_kernel.fire_and_scale(standard, fire, -theta, theta, torch.empty_like(standard))


@pytest.mark.parametrize(("arch", "pooled"), [("cifarnet", 4), ("resnet20", 0), ("vgg16", 5)])
def test_runtime_runs_every_activation_in_the_kernel(arch, pooled, monkeypatch) -> None:
    """Each activation in one kernel call per pass; those followed by average pooling (CifarNet's
    3 stages and its global pool, VGG's 5 pools) with the pooling in the same call."""
    snn = converted(arch)
    pairs = sum(1 for m in snn.network.modules() if type(m).__name__ == "SpikingActivation")
    calls = []
    for name in ("fire_and_scale", "fire_scale_pool"):
        kernel = getattr(cpu_kernel, name)
        monkeypatch.setattr(cpu_kernel, name, lambda *a, k=kernel, n=name: calls.append(n) or k(*a))
    x = torch.randn(20, 3, 32, 32)
    with torch.no_grad():
        compiled = snn(x, T)
        assert len(calls) == pairs * 2  # 20 images at T=4: passes of 16 and 4 (chunking)
        assert calls.count("fire_scale_pool") == pooled * 2
        for setting in ("compiled_kernel", "fuse_activations"):
            setattr(snn, setting, False)
            assert torch.equal(snn(x, T), compiled)
            setattr(snn, setting, True)
        snn.count_spikes = True
        assert torch.equal(snn(x, T), compiled)  # counting spikes takes the tensor operations
    assert len(calls) == pairs * 2
    assert sum(layer.spikes for layer in snn.spike_counts()) > 0


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize(("shape", "window"), [((5, 3, 6, 8, 4), 2), ((3, 2, 4, 8, 8), 4)])
def test_pooling_kernel_equals_avg_pool2d(shape, window, per_channel) -> None:
    """Spikes times scales such as 0.7 + r, whose 3-fold sums round, pooled as ``avg_pool2d``
    pools them, bit for bit; and from a constant current."""
    torch.manual_seed(0)
    x, fire, theta = inputs(shape, torch.float32, per_channel)
    scale = theta + 0.2 * torch.rand_like(theta)  # not the threshold: tests which one scales
    assert cpu_kernel.pools_exactly(x, window, fire, theta, scale)
    constant = x[:1].expand(x.shape)
    for current in (x, constant):
        buffer = empty_steps(x[0], len(x))
        unpooled = cpu_kernel.fire_and_scale(current, fire, -theta, scale, buffer)
        expected = torch.nn.functional.avg_pool2d(unpooled.flatten(0, 1), window)
        out = to_layout(torch.full_like(expected, float("nan")))
        steps = out.unflatten(0, x.shape[:2])
        assert cpu_kernel.fire_scale_pool(current, fire, -theta, scale, window, steps) is steps
        assert torch.equal(out, expected)
        counts = torch.nn.functional.avg_pool2d((unpooled > 0).float().flatten(0, 1), window)
        assert (counts * window**2 == 3).any()  # windows of 3 spikes: sums that round


def test_what_the_pooling_kernel_does_not_take() -> None:
    x, fire, theta = inputs((2, 1, 4, 6, 6), torch.float32, True)
    assert cpu_kernel.pools_exactly(x, 2, fire, theta)
    assert not cpu_kernel.pools_exactly(x, 3, fire, theta)  # x / 9 rounds: not taken
    assert not cpu_kernel.pools_exactly(x[..., :5], 2, fire, theta)  # windows do not tile W
    assert not cpu_kernel.pools_exactly(x.contiguous(), 2, fire, theta)  # standard layout


def if_gradients(x, theta, fire, grad, compiled: bool, scaled: str | None, surrogate=None):
    """Output and gradients of ``if_sequence``; ``scaled``: None, the threshold as the scale
    (``tied``, as fine-tuning does) or a scale of its ``own``."""
    x, theta, fire = (t.detach().clone().requires_grad_() for t in (x, theta, fire))
    own = (theta.detach() * 1.5 + 0.25).requires_grad_()
    scale = {None: None, "tied": theta, "own": own}[scaled]
    out = if_sequence(x, theta, fire, compiled, scale, surrogate or Surrogate())
    out.backward(grad)
    return out, x.grad, theta.grad, fire.grad, *([own.grad] if scaled == "own" else [])


@pytest.mark.parametrize(
    "surrogate",
    [Surrogate(), Surrogate(detach_reset=True), Surrogate(width=0.5)],
    ids=["default", "detach_reset", "width_0.5"],
)
@pytest.mark.parametrize("scaled", [None, "tied", "own"])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 16, 9, 7), (1, 2, 5, 3, 3), (6, 700, 33)])
def test_training_kernels_equal_the_tensor_operations(
    shape, per_channel, scaled, surrogate, monkeypatch
) -> None:
    """Forward bit for bit (the runtime's spikes, times the scale); gradients to float rounding
    (the channel sums add in another order)."""
    torch.manual_seed(0)
    x, fire, theta = inputs(shape, torch.float32, per_channel)
    grad = to_layout(torch.randn(shape))
    calls = []
    backward = cpu_kernel.if_backward
    monkeypatch.setattr(cpu_kernel, "if_backward", lambda *a: calls.append(1) or backward(*a))
    compiled = if_gradients(x, theta, fire, grad, True, scaled, surrogate)
    reference = if_gradients(x, theta, fire, grad, False, scaled, surrogate)
    assert calls == [1]  # the kernels ran, and only for the compiled run
    assert torch.equal(compiled[0], reference[0])
    for got, expected in zip(compiled[1:], reference[1:], strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all(g.abs().sum() > 0 for g in compiled[1:] if g is not compiled[2])
    assert (compiled[2].abs().sum() > 0) == (shape[0] > 1 or scaled == "tied")  # reset: T > 1


@pytest.mark.parametrize("arch", ["cifarnet", "resnet20"])
def test_fine_tuning_runs_each_activation_in_one_kernel_node(arch, monkeypatch) -> None:
    """A pass that builds a graph runs every IF layer with its scale in the training kernels:
    the tensor operations' output bit for bit, their gradients to float rounding."""
    snn = converted(arch)
    set_trainable(snn, True)
    snn.requires_grad_(True)
    pairs = sum(1 for m in snn.network.modules() if type(m).__name__ == "SpikingActivation")
    calls = []
    kernel = cpu_kernel.integrate_and_fire_kept
    monkeypatch.setattr(
        cpu_kernel, "integrate_and_fire_kept", lambda *a: calls.append(1) or kernel(*a)
    )
    x = torch.randn(6, 3, 32, 32)
    runs = {}
    for compiled in (True, False):
        snn.compiled_kernel = compiled
        snn.zero_grad()
        out = snn(x, T)
        out.square().mean().backward()
        runs[compiled] = out.detach(), {n: p.grad.clone() for n, p in snn.named_parameters()}
    assert len(calls) == pairs  # one pass (6 images), each pair once, only when compiled
    assert torch.equal(runs[True][0], runs[False][0])
    for name, grad in runs[True][1].items():
        torch.testing.assert_close(grad, runs[False][1][name], rtol=1e-4, atol=1e-6, msg=name)
    thresholds = [n for n in runs[True][1] if n.endswith("threshold")]
    assert len(thresholds) == pairs and all(runs[True][1][n].abs().sum() > 0 for n in thresholds)


@pytest.mark.parametrize("arch", ["cifarnet", "resnet20"])
def test_executor_runs_the_if_loops_in_the_kernel(arch, tmp_path, monkeypatch) -> None:
    """Every IF loop of an exported file runs in the kernel, with the spikes of stepping its
    nodes one by one and of the native runtime in tensor operations."""
    snn = converted(arch)
    x = torch.randn(3, 3, 32, 32)
    _, _, graph = round_trip(snn, x, tmp_path)
    executor = Executor(graph)
    calls = []
    kernel = cpu_kernel.fire_and_scale
    monkeypatch.setattr(cpu_kernel, "fire_and_scale", lambda *a: calls.append(1) or kernel(*a))
    steps = x.expand(T, *x.shape)
    with torch.no_grad():
        compiled = executor(steps)
        loops = sum(1 for stage in executor.schedule.stages if stage.kind == "loop")
        assert len(calls) == loops > 0
        executor.compiled_kernel = snn.compiled_kernel = False
        assert torch.equal(executor(steps), compiled)
        assert torch.equal(snn(x, T), compiled)
    assert len(calls) == loops


def test_a_gradient_constant_over_time_is_read_at_every_step() -> None:
    """A spike-count readout (``spikes.sum(0)``) sends back one gradient expanded over T (stride
    0); the kernel's backward took it for a constant input's single step: only t = 0 computed,
    the other steps uninitialized memory (values near 1e37)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5)
    grads = {}
    for compiled in (True, False):
        neuron = IFNeuron(torch.full((5,), 0.6), torch.full((5,), 0.3))
        neuron.compiled_kernel = compiled
        inputs = x.clone().requires_grad_(True)
        counts = neuron.run_sequence(inputs).sum(0)
        torch.nn.functional.cross_entropy(counts, torch.tensor([0, 1, 2])).backward()
        grads[compiled] = inputs.grad
    torch.testing.assert_close(grads[True], grads[False])
    assert (grads[False].abs().sum(dim=(1, 2)) > 0).all()
