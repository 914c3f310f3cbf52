"""Execute a ``nir.NIRGraph`` on ``[T, B, ...]`` tensors, bit-exactly like the native runtime.

Schedule (see :mod:`neurocuda.nir.schedule`): Kahn's order of strongly connected components over the
feed-forward edges. A stateless node runs once on all ``T * B`` samples; a stateful node outside a
cycle is scanned over T; a cycle (which must contain a stateful node) is stepped over T as a whole.
A node's input is the sum of its incoming edges: feed-forward edges in edge-list order, then
recurrent edges (which deliver the previous step's value; nothing at t = 0).

Constant input (direct encoding: the same image at every step) is detected, and the stateless nodes
that depend only on it run once on the B images, as the native runtime does: on CPU a
convolution's result can depend on the batch size, so both sides must run it on the same batch to
agree bit for bit. For the same reason convolution weights and 4-D activations are held in the
native runtime's memory layout (:mod:`neurocuda.snn.layout`).

The soft-reset IF loop our exporter writes (``I -> Threshold``, recurrent ``Scale(-theta)`` into
``I``) runs on CPU over all T steps in the native runtime's compiled loop
(:mod:`neurocuda.snn.cpu_kernel`): the same float operations as stepping the three nodes, so the
same spikes; every other loop is stepped node by node.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Self

import nir
import numpy as np
import torch
from torch import nn

from neurocuda.nir.errors import NIRFormatError
from neurocuda.nir.metadata import RESET_CONVENTIONS, ResetConvention
from neurocuda.nir.primitives import IntegratorOp, ScaleOp, ThresholdOp, make_op
from neurocuda.nir.schedule import Schedule, Stage, build_schedule
from neurocuda.snn import cpu_kernel
from neurocuda.snn.chunking import sub_batch_size
from neurocuda.snn.layout import apply_layout, empty_steps, to_layout

# A value is [T, B, ...] (varying) or [B, ...] (the same at every step).
Value = tuple[torch.Tensor, bool]


class Executor(nn.Module):
    """Run ``graph`` with time step ``dt``; ``forward(x[T, B, ...]) -> output node's [T, B, ...]``.

    ``convention`` is how spiking neurons reset: ``"nir"`` (to ``v_reset``, NIR's semantics) or
    ``"subtract"`` (by their threshold; files whose metadata records ``reset_convention``
    ``subtract``, such as the ``portable-soft`` profile, and producers that subtract).

    ``memory_format`` is the layout of conv weights and 4-D activations: ``None`` follows
    :mod:`neurocuda.snn.layout` (the native runtime's, so its round trip is bit-exact);
    ``torch.contiguous_format`` computes as tools that run the standard layout (snnTorch, ...),
    since a convolution rounds differently by layout on CPU.

    State starts at zero on every call. Parameters are cast to ``dtype``. Shapes are checked
    before anything runs (at construction when the Input node declares its shape, else on the
    first call): a node whose inputs or parameters do not fit raises :class:`NIRFormatError`.
    """

    def __init__(
        self,
        graph: nir.NIRGraph,
        dt: float = 1.0,
        dtype: torch.dtype = torch.float32,
        convention: ResetConvention = "nir",
        memory_format: torch.memory_format | None = None,
    ):
        super().__init__()
        if convention not in RESET_CONVENTIONS:
            raise ValueError(f"convention={convention!r}: use one of {RESET_CONVENTIONS}.")
        if not isinstance(graph, nir.NIRGraph):
            raise TypeError(f"Executor needs a nir.NIRGraph, got {type(graph).__name__}.")
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}.")
        self.dt = dt
        self.dtype = dtype
        self.memory_format = memory_format
        self.schedule: Schedule = build_schedule(graph)
        names = list(self.schedule.graph.nodes)
        self._index = {name: i for i, name in enumerate(names)}
        self.ops = nn.ModuleList(
            make_op(name, node, dt, dtype, convention)
            for name, node in self.schedule.graph.nodes.items()
        )
        apply_layout(self.ops, self.memory_format)
        self._release = self._release_plan()
        self._if_loops = [self._soft_reset_if(stage) for stage in self.schedule.stages]
        _warn_time_constants(self.schedule.graph.nodes, dt)
        input_node = self.schedule.graph.nodes[self.schedule.graph.input]
        shape = input_node.input_type["input"]
        self.input_shape = None if shape is None else tuple(int(s) for s in np.atleast_1d(shape))
        self._checked_shape: tuple[int, ...] | None = None
        self._received: dict[str, tuple[int, ...]] = {}
        self.compiled_kernel = True
        """Run the soft-reset IF loops on CPU in the compiled loop where it applies (same spikes);
        False steps them node by node (for comparison)."""
        if self.input_shape is not None:
            self._check_shapes(self.input_shape)

    def _release_plan(self) -> list[list[str]]:
        """Per stage, the values no later stage reads: dropped as soon as that stage has run.

        Holding every layer's ``[T, B, ...]`` output to the end of a run used T times the memory
        of the native runtime and, on CPU, kept the allocator from reusing warm buffers (each
        layer then wrote fresh pages: convolutions ran 1.4x slower than the native runtime's).
        """
        last_read: dict[str, int] = {}
        for index, stage in enumerate(self.schedule.stages):
            for member in stage.members:
                for src, _ in self.schedule.inputs[member]:
                    if src not in stage.members:
                        last_read[src] = index
        plan: list[list[str]] = [[] for _ in self.schedule.stages]
        for name, index in last_read.items():
            if name != self.schedule.graph.output:
                plan[index].append(name)
        return plan

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)
        apply_layout(self.ops, self.memory_format)  # by default the layout follows the device
        return self

    def op(self, name: str) -> nn.Module:
        """The torch op of node ``name`` (qualified ``sub.node`` inside nested graphs)."""
        return self.ops[self._index[name]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``x`` in passes of the native runtime's sub-batch size (the same split, so that
        both run every convolution on the same batch: bit-identical on CPU too)."""
        self._check_input(x)
        size = sub_batch_size(x.shape[1], x.shape[0], x.device)
        outputs = [self._run(part) for part in x.split(size, dim=1)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        layout = self.memory_format
        constant = steps == 1 or torch.equal(x, x[:1].expand_as(x))
        graph = self.schedule.graph
        values: dict[str, Value] = {
            graph.input: (to_layout(x[0], layout), True)
            if constant
            else (to_layout(x, layout), False)
        }
        plan = zip(self.schedule.stages, self._release, self._if_loops, strict=True)
        for stage, released, if_loop in plan:
            if stage.members == [graph.input]:
                continue
            if stage.kind == "stateless":
                values[stage.members[0]] = self._stateless(stage.members[0], values, steps, batch)
            else:
                compiled = self._compiled_if(if_loop, values, steps)
                values.update(compiled or self._stepped(stage, values, steps, batch, x))
            for name in released:
                values.pop(name, None)
        out, is_constant = values[graph.output]
        return out.expand(steps, *out.shape).contiguous() if is_constant else out

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"Executor input must be [T, B, ...], got shape {tuple(x.shape)}.")
        if self.input_shape is not None and tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(
                f"Executor input has per-sample shape {tuple(x.shape[2:])}, but the graph's Input "
                f"node expects {self.input_shape}; pass a [T, B, *{self.input_shape}] tensor."
            )
        if self._checked_shape != tuple(x.shape[2:]):
            self._check_shapes(tuple(x.shape[2:]))

    def _check_shapes(self, shape: tuple[int, ...]) -> None:
        """Propagate per-sample shapes through the graph on empty batches (no arithmetic).

        Every node's feed-forward and recurrent inputs must have one shape, its op must accept it,
        elementwise and stateful ops must keep it (a parameter of another shape would broadcast),
        and Input/Output nodes must receive the shape they declare.
        """
        graph = self.schedule.graph
        device = next(self.buffers(), torch.empty(0)).device
        received: dict[str, tuple[int, ...]] = {}
        produced = {graph.input: shape}
        for stage in self.schedule.stages:
            for name in stage.members:
                if name == graph.input:
                    received[name] = shape
                else:
                    received[name], produced[name] = self._node_shapes(name, produced, device)
        for name, sources in self.schedule.inputs.items():
            for src, recurrent in sources:
                if recurrent and produced[src] != received[name]:
                    raise NIRFormatError(
                        f"Node {name!r} receives shape {received[name]} but its recurrent input "
                        f"from {src!r} has shape {produced[src]}."
                    )
        for name, node in graph.nodes.items():
            declared = _declared_shape(node)
            if declared is None or declared == received[name]:
                continue
            message = (
                f"Node {name!r} ({type(node).__name__}) declares shape {declared} but receives "
                f"{received[name]}"
            )
            if isinstance(node, nir.Input):
                raise NIRFormatError(message + ".")
            # the data's shape is well defined: run it (files of other tools declare wrong ones)
            warnings.warn(message + f"; it outputs {received[name]}.", stacklevel=3)
        self._received = received
        self._checked_shape = shape

    def _node_shapes(
        self, name: str, produced: dict[str, tuple[int, ...]], device: torch.device
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(input shape, output shape) of node ``name`` given its sources' output shapes."""
        feeds = {
            src: produced[src] for src, recurrent in self.schedule.inputs[name] if not recurrent
        }
        if not feeds:
            raise NIRFormatError(f"Node {name!r} has no feed-forward input; connect it.")
        if len(set(feeds.values())) > 1:
            raise NIRFormatError(f"Node {name!r} sums inputs of different shapes {feeds}.")
        in_shape = next(iter(feeds.values()))
        op = self.op(name)
        kind = type(self.schedule.graph.nodes[name]).__name__
        x = torch.zeros((0, *in_shape), dtype=self.dtype, device=device)
        try:
            out = op.step(x, None)[0] if op.stateful else op(x)
        except (RuntimeError, ValueError) as error:
            raise NIRFormatError(
                f"Node {name!r} ({kind}) cannot take inputs of shape {in_shape}: {error}"
            ) from error
        if op.stateful or op.elementwise:
            _check_parameter_shapes(name, self.schedule.graph.nodes[name], in_shape)
        return in_shape, tuple(out.shape[1:])

    def _feedforward_sum(self, name: str, values: dict[str, Value]) -> Value:
        total, constant = None, True
        for src, recurrent in self.schedule.inputs[name]:
            if recurrent:
                continue
            tensor, is_constant = values[src]
            total = tensor if total is None else total + tensor
            constant = constant and is_constant
        if total is None:
            raise ValueError(f"Node {name!r} has no feed-forward input; connect it to the Input.")
        return total, constant

    def _stateless(self, name: str, values: dict[str, Value], steps: int, batch: int) -> Value:
        total, constant = self._feedforward_sum(name, values)
        op = self.op(name)
        if constant:
            return op(total), True
        if total.shape[:2] != (steps, batch):  # a sum of constant and varying inputs broadcasts
            total = total.expand(steps, batch, *total.shape[2:])
        out = op(total.reshape(steps * batch, *total.shape[2:]))
        return out.reshape(steps, batch, *out.shape[1:]), False

    def _soft_reset_if(self, stage: Stage) -> tuple[str, str, str, str] | None:
        """``(input, integrator, threshold, reset)`` when ``stage`` is exactly the soft-reset IF
        loop: ``input -> I(dt*r = 1) -> Threshold``, ``Threshold -> Scale -> I`` recurrent, only
        the Threshold's spikes read outside; else ``None``."""
        if stage.kind != "loop" or len(stage.members) != 3:
            return None
        kinds = {type(self.op(name)): name for name in stage.members}
        integrator, threshold, reset = (kinds.get(k) for k in (IntegratorOp, ThresholdOp, ScaleOp))
        if None in (integrator, threshold, reset) or stage.exported != [threshold]:
            return None
        inputs = self.schedule.inputs
        feed = [src for src, recurrent in inputs[integrator] if not recurrent]
        if (
            self.op(integrator).gain is not None
            or len(feed) != 1
            or feed[0] in stage.members
            or sorted(inputs[integrator]) != sorted([(feed[0], False), (reset, True)])
            or inputs[threshold] != [(integrator, False)]
            or inputs[reset] != [(threshold, False)]
        ):
            return None
        return feed[0], integrator, threshold, reset

    def _compiled_if(
        self, loop: tuple[str, str, str, str] | None, values: dict[str, Value], steps: int
    ) -> dict | None:
        """A soft-reset IF loop (:meth:`_soft_reset_if`) over all T steps in the CPU kernel:
        ``u_0 = x_0``, ``u_t = u_{t-1} + (x_t + s_{t-1} * (-theta))`` as the stepped nodes add
        (a sum of two terms is the same in either order), spikes ``u_t > threshold``; ``None``
        where the stage is another loop (``loop`` None) or the kernel does not apply."""
        if loop is None or not self.compiled_kernel:
            return None
        source, _, threshold, reset = loop
        tensor, constant = values[source]
        x = tensor.unsqueeze(0).expand(steps, *tensor.shape) if constant else tensor
        fire_level, neg_threshold = self.op(threshold).threshold, self.op(reset).scale
        if not cpu_kernel.applies(x, fire_level, neg_threshold):
            return None
        spikes = empty_steps(x[0], steps)
        one = torch.ones((), dtype=x.dtype)  # spikes * 1: the Threshold's 0/1 output
        cpu_kernel.fire_and_scale(x, fire_level, neg_threshold, one, spikes)
        return {threshold: (spikes, False)}

    def _stepped(
        self, stage: Stage, values: dict[str, Value], steps: int, batch: int, like: torch.Tensor
    ) -> dict[str, Value]:
        """Run a stateful node or a cycle step by step; return the members read downstream.

        At t = 0 a recurrent edge delivers its source's value one step before the start
        (:meth:`_before_start`): zero, unless a bias lies on the way.

        For speed (as the native runtime) values live in buffers reused at every step: a member
        read downstream writes step t into row t of its preallocated trace, others overwrite one
        buffer. A recurrent edge points back to a node earlier in the step order, so when it is read
        its source still holds the previous step's value.
        """
        kept = stage.exported if stage.kind == "loop" else stage.members
        members = set(stage.members)
        traces: dict[str, torch.Tensor] = {}
        current: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        state: dict[str, object] = dict.fromkeys(stage.members)
        cache: dict[str, torch.Tensor | None] = {}
        initial = {
            src: value
            for name in stage.members
            for src, recurrent in self.schedule.inputs[name]
            if recurrent and (value := self._before_start(src, batch, like, cache)) is not None
        }
        for t in range(steps):
            for name in stage.members:
                total = self._step_input(name, t, values, current, members, sums, initial)
                op = self.op(name)
                if op.stateful:
                    current[name], state[name] = op.step_(total, state[name])
                    if name in kept:
                        self._row(traces, name, current[name], steps, t).copy_(current[name])
                elif t == 0 and not op.elementwise:
                    out = op(total)
                    if name in kept:
                        out = self._row(traces, name, out, steps, t).copy_(out)
                    current[name] = out.clone() if out is total else out
                else:
                    if name in kept:
                        out = self._row(traces, name, total, steps, t)
                    else:
                        out = current[name] if t > 0 else torch.empty_like(total)
                    current[name] = op.into(total, out)
        return {name: (traces[name], False) for name in kept}

    def _before_start(
        self, name: str, batch: int, like: torch.Tensor, cache: dict[str, torch.Tensor | None]
    ) -> torch.Tensor | None:
        """Node ``name``'s value one step before t = 0; ``None`` where it is zero everywhere.

        Before the start, neurons (stateful nodes and ``Threshold``) and the Input emit zeros;
        other stateless nodes are evaluated on the sum of their inputs there, so a loop
        ``LIF -> Affine(bias) -> LIF`` receives the bias at t = 0 (snnTorch's recurrent layers).
        """
        graph = self.schedule.graph
        todo = [name]
        while todo:  # iterative post-order over the stateless ancestors
            node = todo[-1]
            if node in cache:
                todo.pop()
                continue
            op = self.op(node)
            if op.stateful or node == graph.input or isinstance(graph.nodes[node], nir.Threshold):
                cache[todo.pop()] = None
                continue
            missing = [s for s, _ in self.schedule.inputs[node] if s not in cache]
            if missing:
                todo.extend(missing)
                continue
            parts = [cache[s] for s, _ in self.schedule.inputs[node] if cache[s] is not None]
            shape = (batch, *self._received[node])
            total = torch.zeros(shape, dtype=like.dtype, device=like.device)
            for part in parts:
                total = total + part
            value = op(total)
            cache[todo.pop()] = value if bool(value.ne(0).any()) else None
        return cache[name]

    @staticmethod
    def _row(traces: dict, name: str, like: torch.Tensor, steps: int, t: int) -> torch.Tensor:
        if name not in traces:
            traces[name] = empty_steps(like, steps)
        return traces[name][t]

    def _step_input(
        self,
        name: str,
        t: int,
        values: dict[str, Value],
        current: dict[str, torch.Tensor],
        members: set[str],
        sums: dict[str, torch.Tensor],
        initial: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Sum of a member's inputs at step t (feed-forward first, then recurrent, in order)."""
        parts = []
        for src, recurrent in self.schedule.inputs[name]:
            if recurrent:
                if t > 0:
                    parts.append(current[src])
                elif src in initial:  # a bias before the start (else nothing arrives at t = 0)
                    parts.append(initial[src])
            elif src in members:
                parts.append(current[src])
            else:
                tensor, is_constant = values[src]
                parts.append(tensor if is_constant else tensor[t])
        if len(parts) == 1:
            return parts[0]
        if name not in sums:
            sums[name] = torch.empty_like(torch.broadcast_tensors(*parts)[0])
        total = torch.add(parts[0], parts[1], out=sums[name])
        for part in parts[2:]:
            total.add_(part)
        return total


TIME_CONSTANT_RATIO = 10.0
"""Warn when ``dt`` exceeds a time constant by this factor (forward Euler overshoots past 1)."""


def _warn_time_constants(nodes: dict[str, nir.NIRNode], dt: float) -> None:
    """Warn once, naming the first node whose time constant is far below ``dt``.

    Files from other tools give ``tau`` in seconds (e.g. 1e-3) and run at their own step (1e-4);
    at our default ``dt = 1`` such a neuron's decay factor ``dt / tau`` is 1000.
    """
    for name, node in nodes.items():
        for field in ("tau", "tau_syn", "tau_mem"):
            tau = getattr(node, field, None)
            if tau is None or not np.size(tau):
                continue
            smallest = float(np.min(tau))
            if dt / smallest >= TIME_CONSTANT_RATIO:
                warnings.warn(
                    f"Node {name!r} ({type(node).__name__}) has {field} = {smallest:g} but the "
                    f"executor runs at dt = {dt:g} (dt / {field} = {dt / smallest:g}): the "
                    "file's time constants are in another unit than its time step. Pass the "
                    "step its producer used, e.g. Executor(graph, dt=1e-4) (snnTorch, "
                    "spikingjelly) or dt=1e-3 (norse).",
                    stacklevel=3,
                )
                return


def _declared_shape(node: nir.NIRNode) -> tuple[int, ...] | None:
    """The shape an Input or Output node declares (per sample), if any."""
    if isinstance(node, nir.Input):
        shape = node.input_type.get("input")
    elif isinstance(node, nir.Output):
        shape = node.output_type.get("output")
    else:
        return None
    return None if shape is None else tuple(int(s) for s in np.atleast_1d(shape))


def _check_parameter_shapes(name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> None:
    """Per-neuron parameters must have the input's shape (or broadcast to it unchanged).

    Checked on the node, not the op: ops keep constant parameters compacted to size 1, which
    would hide a parameter of the wrong shape.
    """
    for item in dataclasses.fields(node):
        value = getattr(node, item.name)
        if item.name in ("input_type", "output_type") or not isinstance(value, np.ndarray):
            continue
        try:
            fits = np.broadcast_shapes(value.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise NIRFormatError(
                f"Node {name!r} ({type(node).__name__}) has {item.name} of shape {value.shape}, "
                f"which does not fit its input shape {shape}."
            )
