"""The NIR executor on hand-built graphs: every nir 1.0.8 primitive, recurrence, nesting, errors."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurocuda.nir import Executor
from neurocuda.snn.layout import to_layout

T, B = 5, 3
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def chain(*nodes: nir.NIRNode) -> nir.NIRGraph:
    return nir.NIRGraph.from_list(*nodes)


def steps(x: torch.Tensor, fn) -> torch.Tensor:
    return torch.stack([fn(x_t) for x_t in x])


def run(graph: nir.NIRGraph, x: torch.Tensor, dt: float = 1.0) -> torch.Tensor:
    return Executor(graph, dt=dt)(x)


def test_affine_and_linear_match_f_linear():
    w, b = rand(4, 6), rand(4)
    x = torch.randn(T, B, 6)
    out = run(chain(nir.Affine(weight=w, bias=b)), x)
    assert torch.equal(out, F.linear(x, torch.from_numpy(w), torch.from_numpy(b)))
    out = run(chain(nir.Linear(weight=w)), x)
    assert torch.equal(out, F.linear(x, torch.from_numpy(w)))


def test_conv1d_and_conv2d_match_torch():
    w1, b1 = rand(4, 2, 3), rand(4)
    conv1 = nir.Conv1d(
        input_shape=10, weight=w1, stride=2, padding=1, dilation=1, groups=1, bias=b1
    )
    x = torch.randn(T, B, 2, 10)
    ref = F.conv1d(x.reshape(T * B, 2, 10), torch.from_numpy(w1), torch.from_numpy(b1), 2, 1)
    assert torch.equal(run(chain(conv1), x), ref.reshape(T, B, 4, -1))

    w2, b2 = rand(6, 2, 3, 3), rand(6)
    conv2 = nir.Conv2d(
        input_shape=(8, 8), weight=w2, stride=1, padding="same", dilation=2, groups=2, bias=b2
    )
    x = torch.randn(T, B, 4, 8, 8)  # groups=2: 4 input channels, 2 per group
    # in the executor's memory layout (neurocuda.snn.layout): a conv rounds differently by layout
    ref = F.conv2d(
        to_layout(x.reshape(T * B, 4, 8, 8)),
        to_layout(torch.from_numpy(w2)),
        torch.from_numpy(b2),
        1,
        "same",
        2,
        2,
    )
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([4, 8, 8])),
            "conv": conv2,
            "output": nir.Output(np.array([6, 8, 8])),
        },
        edges=[("input", "conv"), ("conv", "output")],
        type_check=False,
    )
    assert torch.equal(run(graph, x), ref.reshape(T, B, 6, 8, 8))


def test_pools_and_flatten():
    x = torch.randn(T, B, 3, 8, 8)
    kernel, stride, pad = np.array([2, 2]), np.array([2, 2]), np.array([1, 1])
    avg = nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=pad)
    total = nir.SumPool2d(kernel_size=kernel, stride=stride, padding=pad)
    for node, ref in [
        (avg, F.avg_pool2d(x.flatten(0, 1), 2, 2, 1)),
        (total, F.avg_pool2d(x.flatten(0, 1), 2, 2, 1) * 4),
    ]:
        graph = nir.NIRGraph(
            nodes={
                "input": nir.Input(np.array([3, 8, 8])),
                "pool": node,
                "output": nir.Output(np.array([3, 5, 5])),
            },
            edges=[("input", "pool"), ("pool", "output")],
            type_check=False,
        )
        torch.testing.assert_close(run(graph, x), ref.reshape(T, B, 3, 5, 5), rtol=0, atol=1e-6)
    flat = chain(nir.Flatten(input_type={"input": np.array([3, 8, 8])}, start_dim=0))
    assert torch.equal(run(flat, x), x.reshape(T, B, -1))


def test_scale_and_threshold():
    s, thr = rand(7), rand(7)
    x = torch.randn(T, B, 7)
    assert torch.equal(run(chain(nir.Scale(scale=s)), x), x * torch.from_numpy(s))
    out = run(chain(nir.Threshold(threshold=thr)), x)
    assert torch.equal(out, (x > torch.from_numpy(thr)).float())


def integrate(x: torch.Tensor, update) -> torch.Tensor:
    state, outs = None, []
    for x_t in x:
        y, state = update(x_t, state)
        outs.append(y)
    return torch.stack(outs)


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_integrator_and_if(dt):
    n = 6
    r, thr, reset = np.full(n, 2.0, np.float32), np.full(n, 0.7, np.float32), rand(n) * 0.1
    x = torch.rand(T, B, n)

    def i_ref(x_t, v):
        v = (0 if v is None else v) + dt * 2.0 * x_t
        return v, v

    torch.testing.assert_close(run(chain(nir.I(r=r)), x, dt), integrate(x, i_ref))

    def if_ref(x_t, v):
        v = (0 if v is None else v) + dt * 2.0 * x_t
        z = v > 0.7
        return z.float(), torch.where(z, torch.from_numpy(reset), v)

    out = run(chain(nir.IF(r=r, v_threshold=thr, v_reset=reset)), x, dt)
    assert torch.equal(out, integrate(x, if_ref))
    assert out.sum() > 0


def test_li_and_lif_forward_euler():
    n, dt = 5, 0.1
    tau, r, leak = np.full(n, 0.5, np.float32), np.full(n, 3.0, np.float32), rand(n)
    thr = np.full(n, 0.2, np.float32)
    x = torch.rand(T, B, n)
    rate = torch.tensor(dt / 0.5)

    def li_ref(x_t, v):
        v = torch.zeros_like(x_t) if v is None else v
        v = v + rate * ((torch.from_numpy(leak) - v) + 3.0 * x_t)
        return v, v

    torch.testing.assert_close(
        run(chain(nir.LI(tau=tau, r=r, v_leak=leak)), x, dt), integrate(x, li_ref)
    )

    def lif_ref(x_t, v):
        v, _ = li_ref(x_t, v)
        z = v > 0.2
        return z.float(), torch.where(z, torch.zeros_like(v), v)

    lif = nir.LIF(tau=tau, r=r, v_leak=leak, v_threshold=thr)
    out = run(chain(lif), x, dt)
    torch.testing.assert_close(out, integrate(x, lif_ref))
    assert 0 < out.sum() < out.numel()


def test_cuba_neurons():
    n, dt = 4, 0.25
    ones = np.ones(n, np.float32)
    x = torch.rand(T, B, n)
    w_in = 2.0

    def cuba_ref(x_t, state):
        i, v = (torch.zeros_like(x_t),) * 2 if state is None else state
        i = i + dt / 0.5 * (w_in * x_t - i)
        v = v + dt / 2.0 * ((0 - v) + i)
        return v, (i, v)

    li = nir.CubaLI(tau_syn=ones * 0.5, tau_mem=ones * 2, r=ones, v_leak=ones * 0, w_in=w_in)
    torch.testing.assert_close(run(chain(li), x, dt), integrate(x, cuba_ref))

    def cubalif_ref(x_t, state):
        v, (i, v) = cuba_ref(x_t, state)
        z = v > 0.05
        return z.float(), (i, torch.where(z, torch.zeros_like(v), v))

    lif = nir.CubaLIF(
        tau_syn=ones * 0.5,
        tau_mem=ones * 2,
        r=ones,
        v_leak=ones * 0,
        v_threshold=ones * 0.05,
        w_in=w_in,
    )
    out = run(chain(lif), x, dt)
    torch.testing.assert_close(out, integrate(x, cubalif_ref))
    assert out.sum() > 0


def test_delay_per_element():
    delay = np.array([0.0, 1.0, 3.0], np.float32)
    x = torch.randn(T, B, 3)
    out = run(chain(nir.Delay(delay=delay)), x)
    ref = torch.zeros_like(x)
    for k, d in enumerate([0, 1, 3]):
        ref[d:, :, k] = x[: T - d, :, k]
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="whole non-negative multiples"):
        Executor(chain(nir.Delay(delay=np.array([0.5], np.float32))))


def test_delay_keeps_the_values_of_reused_input_buffers():
    """A Delay fed by two edges (the executor's sum buffer, rewritten every step) or inside a
    loop (an integrator's state, updated in place) kept references: from step d on it returned
    its undelayed input."""
    n, steps = 3, 6
    delay, one = np.full(n, 2.0, np.float32), np.ones(n, np.float32)
    x = torch.arange(1.0, steps + 1).reshape(steps, 1, 1).expand(steps, 1, n).contiguous()
    io = {"input": nir.Input(np.array([n])), "output": nir.Output(np.array([n]))}
    two = nir.NIRGraph(
        nodes={**io, "a": nir.Scale(scale=one), "b": nir.Scale(scale=one),
               "delay": nir.Delay(delay=delay)},
        edges=[("input", "a"), ("input", "b"), ("a", "delay"), ("b", "delay"),
               ("delay", "output")],
    )  # fmt: skip
    looped = nir.NIRGraph(
        nodes={**io, "i": nir.I(r=one), "delay": nir.Delay(delay=delay),
               "zero": nir.Scale(scale=np.zeros(n, np.float32))},
        edges=[("input", "i"), ("i", "delay"), ("delay", "zero"), ("zero", "i"),
               ("delay", "output")],
        type_check=False,
    )  # fmt: skip
    assert Executor(two)(x)[:, 0, 0].tolist() == [0, 0, 2, 4, 6, 8]
    assert Executor(looped)(x)[:, 0, 0].tolist() == [0, 0, 1, 3, 6, 10]  # the running sum, late


def test_a_float64_executor_checks_its_shapes_in_float64():
    graph = chain(nir.Affine(weight=rand(4, 3), bias=rand(4)))
    x = torch.randn(T, B, 3, dtype=torch.float64)
    out = Executor(graph, dtype=torch.float64)(x)
    assert out.dtype == torch.float64 and out.shape == (T, B, 4)


def soft_reset_graph(theta: float, n: int) -> nir.NIRGraph:
    """Integrator + threshold with a recurrent Scale(-theta) edge (the faithful IF form)."""
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([n])),
            "i": nir.I(r=np.ones(n, np.float32)),
            "thr": nir.Threshold(threshold=np.full(n, theta, np.float32)),
            "reset": nir.Scale(scale=np.full(n, -theta, np.float32)),
            "output": nir.Output(np.array([n])),
        },
        edges=[("input", "i"), ("i", "thr"), ("thr", "reset"), ("reset", "i"), ("thr", "output")],
    )


def soft_reset_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    u, s, out = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for x_t in x:
        u = u + (x_t + (-theta) * s)
        s = (u > theta).float()
        out.append(s)
    return torch.stack(out)


def test_recurrent_edge_reads_previous_step():
    x = torch.rand(8, B, 4) * 2
    out = run(soft_reset_graph(0.75, 4), x)
    assert torch.equal(out, soft_reset_reference(x, 0.75))
    assert 0 < out.sum() < out.numel()


def test_position_dependent_threshold_is_not_read_per_channel():
    """A file's threshold that varies over H x W only (compacted to ``[1, H, W]``) with H x W = C:
    the CPU kernel (per-layer or per-channel constants) must leave it to the stepped nodes."""
    shape = (4, 2, 2)
    theta = np.broadcast_to(np.array([[0.5, 1.0], [1.5, 2.0]], np.float32), shape).copy()
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array(shape)),
            "i": nir.I(r=np.ones(shape, np.float32)),
            "thr": nir.Threshold(threshold=theta),
            "reset": nir.Scale(scale=-theta),
            "output": nir.Output(np.array(shape)),
        },
        edges=[("input", "i"), ("i", "thr"), ("thr", "reset"), ("reset", "i"), ("thr", "output")],
    )
    x = to_layout(torch.rand(6 * B, *shape) * 2).reshape(6, B, *shape)
    ref, u, s = [], torch.zeros_like(x[0]), torch.zeros_like(x[0])
    t = torch.from_numpy(theta)
    for x_t in x:
        u = u + (x_t + (-t) * s)
        s = (u > t).float()
        ref.append(s)
    executor = Executor(graph)
    with torch.no_grad():
        compiled = executor(x)
        executor.compiled_kernel = False
        assert torch.equal(executor(x), compiled)
    assert torch.equal(compiled, torch.stack(ref))


def test_nested_graph_and_multi_input_sum():
    """Two paths summed at a nested soft-reset neuron, then integrated."""
    n = 4
    w1, w2 = rand(n, n), rand(n, n)
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([n])),
            "a": nir.Linear(weight=w1),
            "b": nir.Linear(weight=w2),
            "neuron": soft_reset_graph(0.5, n),
            "out_i": nir.I(r=np.ones(n, np.float32)),
            "output": nir.Output(np.array([n])),
        },
        edges=[
            ("input", "a"),
            ("input", "b"),
            ("a", "neuron"),
            ("b", "neuron"),
            ("neuron", "out_i"),
            ("out_i", "output"),
        ],
    )
    x = torch.randn(6, B, n)
    summed = F.linear(x, torch.from_numpy(w1)) + F.linear(x, torch.from_numpy(w2))
    ref = torch.cumsum(soft_reset_reference(summed, 0.5), dim=0)
    assert torch.equal(Executor(graph)(x), ref)


def test_stateless_nodes_run_once_on_all_steps():
    calls = []
    ex = Executor(
        chain(nir.Scale(scale=np.ones(3, np.float32) * 2), nir.I(r=np.ones(3, np.float32)))
    )
    ex.op("scale").register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    ex(torch.randn(T, B, 3))
    assert calls == [torch.Size([T * B, 3])]
    calls.clear()
    ex(torch.ones(T, B, 3))  # constant input: once on the B samples
    assert calls == [torch.Size([B, 3])]


def test_fresh_state_every_call():
    ex = Executor(chain(nir.I(r=np.ones(2, np.float32))))
    x = torch.rand(T, B, 2)
    assert torch.equal(ex(x), ex(x))


def test_cycle_without_state_is_rejected():
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([2])),
            "a": nir.Scale(scale=np.ones(2, np.float32)),
            "b": nir.Scale(scale=np.ones(2, np.float32)),
            "output": nir.Output(np.array([2])),
        },
        edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
    )
    with pytest.raises(ValueError, match="cycle without a stateful node"):
        Executor(graph)


def test_bad_graphs_are_rejected_with_names():
    two_inputs = nir.NIRGraph(
        nodes={
            "i1": nir.Input(np.array([2])),
            "i2": nir.Input(np.array([2])),
            "o": nir.Output(np.array([2])),
        },
        edges=[("i1", "o"), ("i2", "o")],
    )
    with pytest.raises(ValueError, match="exactly one Input"):
        Executor(two_inputs)
    graph = chain(nir.Scale(scale=np.ones(2, np.float32)))
    graph.edges.append(("scale", "ghost"))
    with pytest.raises(ValueError, match="'ghost', which does not exist"):
        Executor(graph)
    with pytest.raises(ValueError, match="per-sample shape"):
        Executor(chain(nir.Scale(scale=np.ones(2, np.float32))))(torch.ones(T, B, 3))
    with pytest.raises(ValueError, match="not 2-D"):
        Executor(chain(nir.Affine(weight=rand(2, 3, 4), bias=rand(2, 3))))
