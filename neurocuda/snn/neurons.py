"""Spiking building blocks: IF neuron, output scale, integrating output layer.

The arithmetic follows docs/semantics.md exactly (offset membrane ``u = v - v_init`` starting at 0,
``u = u + (x + (-theta) * s_prev)``, strict ``>``, binary spikes), because the NIR executor and the
float deployment targets must reproduce it bit for bit.

Multi-step convention: stateless layers see the ``T * B`` samples flattened into the batch dimension
(time-major). A stateful module is told ``T`` and ``B`` by :class:`~neurocuda.snn.SpikingModel`
before each call (:meth:`MultiStepModule.begin_run`) and reshapes to ``[T, B, ...]`` internally.
An input with only ``B`` samples is a constant current, identical at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurocuda.snn import cpu_kernel
from neurocuda.snn.if_sequence import if_sequence, integrate_and_fire
from neurocuda.snn.layout import empty_steps, to_layout
from neurocuda.snn.surrogate import Surrogate, spike

ResetMode = Literal["subtract", "zero"]


class MultiStepModule(nn.Module):
    """A module with state over time; it loops over T and is reset at every run."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps = 1
        self.batch_size: int | None = None

    def begin_run(self, timesteps: int, batch_size: int) -> None:
        """Set the run's shape; the next forward starts from a zero state."""
        self.timesteps = timesteps
        self.batch_size = batch_size

    def as_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """View ``x`` (``[T*B, ...]`` or constant ``[B, ...]``) as ``[T, B, ...]``."""
        steps, batch = self.timesteps, self.batch_size or x.shape[0] // self.timesteps
        if x.shape[0] == steps * batch:
            return x.reshape(steps, batch, *x.shape[1:])
        if x.shape[0] == batch:
            return x.unsqueeze(0).expand(steps, *x.shape)
        raise ValueError(
            f"{type(self).__name__} got {x.shape[0]} samples for T={steps}, B={batch}; expected "
            "T*B (time-major) or B (constant input). Run it through SpikingModel."
        )


class IFNeuron(MultiStepModule):
    """Integrate-and-fire neuron with reset by subtraction (default) or to zero.

    ``threshold`` and ``v_init`` broadcast to one sample's feature shape: ``[]``, ``[C, 1, 1]``
    (per conv channel) or ``[C]`` (per linear feature). Output spikes are binary; the layer's
    analog output ``theta * s`` is produced by the :class:`Scale` module that follows it.
    """

    def __init__(
        self, threshold: torch.Tensor, v_init: torch.Tensor, reset: ResetMode = "subtract"
    ) -> None:
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32)
        v_init = torch.as_tensor(v_init, dtype=torch.float32).expand_as(threshold).clone()
        if not bool((threshold > 0).all()):
            raise ValueError("IFNeuron thresholds must be > 0 (a zero threshold fires always).")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}.")
        self.reset = reset
        self.register_buffer("threshold", threshold.clone())
        self.register_buffer("v_init", v_init)
        self.register_buffer("fire_level", threshold - v_init)
        self.count_spikes = True
        """Sum each run's spikes into ``last_spike_count`` (a pass over them); a
        :class:`~neurocuda.snn.SpikingModel` sets it from its own ``count_spikes``."""
        self.compiled_kernel = True
        """Run on CPU in :mod:`~neurocuda.snn.cpu_kernel`'s loops where they apply (same spikes);
        a :class:`~neurocuda.snn.SpikingModel` sets it from its own ``compiled_kernel``."""
        self.surrogate = Surrogate()
        """How backprop through time treats the spike (training only); a reset to zero never
        takes a gradient from the spike, so ``detach_reset`` changes nothing there."""
        self.last_spike_count = torch.zeros(())
        self.last_neurons_per_sample = 0

    def shift_initial_membrane(self, delta: torch.Tensor) -> None:
        """Add ``delta`` (e.g. per channel ``[C, 1, 1]``) to ``v_init``; the threshold is kept."""
        v_init = self.v_init + delta.to(self.v_init)
        self.v_init = v_init
        self.fire_level = self.threshold - v_init

    @property
    def trainable(self) -> bool:
        """Whether ``threshold`` and ``v_init`` are parameters (fine-tuning), not buffers."""
        return isinstance(self.threshold, nn.Parameter)

    def set_trainable(self, enabled: bool) -> None:
        """Hold ``threshold`` and ``v_init`` as ``nn.Parameter``s or as plain buffers again.

        Same values and state-dict keys either way; ``fire_level`` stays a buffer, recomputed.
        """
        values = {name: getattr(self, name).detach().clone() for name in ("threshold", "v_init")}
        for name, value in values.items():
            delattr(self, name)
            if enabled:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.refresh()

    @torch.no_grad()
    def refresh(self, min_threshold: float | None = None) -> None:
        """After ``threshold``/``v_init`` changed: clamp the threshold to ``>= min_threshold``
        (when given, > 0) and recompute ``fire_level = threshold - v_init``."""
        if min_threshold is not None:
            if min_threshold <= 0:
                raise ValueError(f"min_threshold={min_threshold} must be > 0.")
            self.threshold.clamp_(min=min_threshold)
        self.fire_level = self.threshold - self.v_init

    def forward(self, x: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes for ``x`` (``[T*B, ...]`` or constant ``[B, ...]``) as ``[T*B, ...]``; see
        :meth:`run_sequence` for ``work``."""
        spikes = self.run_sequence(self.as_sequence(x), work)
        return to_layout(spikes.flatten(0, 1))

    def fire_scaled(
        self, x: torch.Tensor, scale: torch.Tensor, work: torch.Tensor | None
    ) -> torch.Tensor:
        """``self(x, work=work) * scale``; with ``compiled_kernel``, on CPU (reset by subtraction,
        spikes not counted) in one compiled pass (:mod:`~neurocuda.snn.cpu_kernel`), bit for bit
        the same. An inference run's result lives in ``work``; a run that builds a graph
        (:meth:`needs_grad`) differentiates through ``scale`` too."""
        steps = self.as_sequence(x)
        if self.needs_grad(x):
            if self.reset != "subtract" or self.count_spikes:
                return self(x) * scale
            self.last_neurons_per_sample = steps[0, 0].numel()
            return to_layout(self._run_differentiable(steps, scale).flatten(0, 1))
        if (
            self.compiled_kernel
            and self.reset == "subtract"
            and not self.count_spikes
            and cpu_kernel.applies(steps, self.fire_level, self.threshold, scale)
        ):
            out = (self.work_buffer(steps) if work is None else work)[: steps.shape[0]]
            cpu_kernel.fire_and_scale(steps, self.fire_level, -self.threshold, scale, out)
            self.last_neurons_per_sample = steps[0, 0].numel()
            return to_layout(out.flatten(0, 1))
        return self(x, work=work).mul_(scale)

    def needs_grad(self, x: torch.Tensor) -> bool:
        """Whether a run on ``x`` builds a graph: autograd on, and ``x`` or the neuron's
        parameters requiring gradients."""
        return torch.is_grad_enabled() and (
            x.requires_grad or self.threshold.requires_grad or self.v_init.requires_grad
        )

    def run_sequence(self, x: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``x`` of shape ``[T, B, ...]`` from a zero state; return spikes ``[T, B, ...]``.

        With gradients needed (:meth:`needs_grad`) the same float operations run out of place
        with a surrogate gradient at the threshold; otherwise the in-place inference loop runs
        in ``work`` when given (``work_buffer(x)``; the spikes are its first T rows).
        """
        grad = self.needs_grad(x)
        spikes = self._run_differentiable(x) if grad else self._run_inference(x, work)
        if self.count_spikes:
            self.last_spike_count = spikes.detach().sum()
        self.last_neurons_per_sample = x[0, 0].numel()
        return spikes

    @staticmethod
    def work_buffer(x: torch.Tensor) -> torch.Tensor:
        """The inference loop's memory for ``x`` (``[T, B, ...]``): T rows of spikes, then the
        membrane and the recurrent input, in ``x``'s layout. One allocation, reusable."""
        return empty_steps(x[0], x.shape[0] + 2)

    def _run_inference(self, x: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
        """In-place ops into preallocated buffers (1.5x faster on CPU than the out-of-place form);
        reset by subtraction is :func:`~neurocuda.snn.if_sequence.integrate_and_fire`. Spikes
        (and so the layers after this neuron) keep ``x``'s memory layout
        (:mod:`neurocuda.snn.layout`).
        """
        x = x.detach()
        steps = x.shape[0]
        work = self.work_buffer(x) if work is None else work
        spikes, membrane, recurrent = work[:steps], work[steps : steps + 1], work[steps + 1]
        if self.reset == "subtract":
            integrate_and_fire(x, self.fire_level, -self.threshold, spikes, membrane, recurrent)
        else:
            neg_v_init = -self.v_init
            u = membrane[0].zero_()
            for t in range(steps):
                u.add_(x[t])
                fired = u > self.fire_level
                spikes[t] = fired
                u = torch.where(fired, neg_v_init, u)
        return spikes

    def _run_differentiable(
        self, x: torch.Tensor, scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The inference loop's float operations with a surrogate gradient, for backprop through
        time (reset by subtraction: :func:`~neurocuda.snn.if_sequence.if_sequence`, one autograd
        node per layer, times ``scale`` when given; reset to zero: out of place, step by step,
        without a scale).

        ``fire_level`` is recomputed from the (trainable) threshold and initial membrane with the
        buffer's own expression, so it holds the same bits.
        """
        threshold = self.threshold
        fire_level = threshold - self.v_init if self.trainable else self.fire_level
        x = x.to(threshold.dtype)  # bfloat16 conv outputs under autocast: the state stays float32
        if self.reset == "subtract":
            return if_sequence(
                x, threshold, fire_level, self.compiled_kernel, scale, self.surrogate
            )
        u = torch.zeros_like(x[0])
        steps = []
        neg_v_init = -self.v_init
        for t in range(x.shape[0]):
            u = u + x[t]
            s = spike(u, fire_level, self.surrogate.half_width(threshold))
            steps.append(s)
            u = torch.where(s.bool(), neg_v_init, u)
        return torch.stack(steps)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.threshold.shape)}, reset={self.reset}"


class Scale(nn.Module):
    """Multiply by a constant (per channel): ``x * scale``; follows every IF neuron."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}"


class SpikingActivation(nn.Sequential):
    """A converted activation: ``IFNeuron`` then its ``Scale(theta)``, in a run of T steps.

    Between :meth:`begin_buffered_runs` and :meth:`end_buffered_runs` (one
    :class:`~neurocuda.snn.SpikingModel` call) an inference pass without hooks (other than
    :meth:`register_transient_hook`'s) is fused: the neuron runs in a work buffer kept for the
    pair (:meth:`IFNeuron.work_buffer`) and the scale multiplies its spikes in place. Written by
    hand because on CPU a fresh buffer per pass costs more than the IF loop itself: the first
    touch of its pages (~9 ms for the 8 MB of CifarNet's first layer on the test VM, against
    0.4 ms to fill a reused one; docs/results.md). The float operations are the unfused ones, so
    every output is bit-identical. The buffer lives until the end of the call: the pair's output
    is only valid until its next pass, so a hook that may keep it turns the fusion off. A pass
    that builds a graph (fine-tuning) runs the pair as one autograd node instead
    (:meth:`IFNeuron.fire_scaled`): on CPU the kernels scale the spikes in the IF loop's own pass
    and keep no spike tensor for the backward pass.
    """

    def __init__(self, neuron: IFNeuron, scale: Scale) -> None:
        super().__init__(neuron, scale)
        self._buffered = False
        self._buffer: torch.Tensor | None = None
        self._pooled: torch.Tensor | None = None
        self._transient_hooks: set[int] = set()

    def begin_buffered_runs(self) -> None:
        """Fuse the passes from now on (see the class docstring)."""
        self._buffered = True

    def end_buffered_runs(self) -> None:
        """Stop fusing and free the buffers."""
        self._buffered = False
        self._buffer = self._pooled = None

    def register_transient_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """A forward hook that reads the pair's output during the call and keeps no reference
        to it (e.g. :class:`~neurocuda.metrics.SpikeMonitor`'s): the fusion stays on. Any other
        hook on the pair or its modules turns it off, so an output a hook keeps is never
        overwritten by the next pass."""
        handle = self.register_forward_hook(hook)
        self._transient_hooks.add(handle.id)
        return handle

    def _hooked(self, *others: nn.Module) -> bool:
        """Hooks that stop the fusion: any on the two modules or ``others``, and those on the
        pair itself not registered as transient."""
        own = self._forward_pre_hooks or self._forward_hooks.keys() - self._transient_hooks
        return bool(own) or any(m._forward_hooks or m._forward_pre_hooks for m in (*self, *others))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neuron, scale = self[0], self[1]
        if not self._buffered or self._hooked():
            return super().forward(x)
        if neuron.needs_grad(x):  # training: the scale in the same autograd node, no buffer
            return neuron.fire_scaled(x, scale.scale, None)
        steps = neuron.as_sequence(x)
        buffer, wanted = self._buffer, (steps.shape, steps.dtype, steps.device)
        if buffer is None or (buffer[2:].shape, buffer.dtype, buffer.device) != wanted:
            buffer = self._buffer = neuron.work_buffer(steps)
        return neuron.fire_scaled(x, scale.scale, buffer)

    def fire_and_pool(self, x: torch.Tensor, pool: nn.Module) -> torch.Tensor | None:
        """``pool(self(x))`` in one compiled pass on CPU (:func:`~neurocuda.snn.cpu_kernel.
        fire_scale_pool`), or ``None`` where it does not apply (then run the two modules): it
        applies to a fused inference pass (see the class docstring) that the kernels take, with
        ``pool`` an ``nn.AvgPool2d`` whose power-of-two windows tile the input. Bit for bit the
        two modules' output, valid until the pair's next pass."""
        neuron, scale = self[0], self[1]
        window = _tiling_window(pool)
        if (
            window is None
            or not self._buffered
            or self._hooked(self, pool)  # the pair's call is skipped: no hook of its may wait
            or neuron.needs_grad(x)
            or not neuron.compiled_kernel
            or neuron.reset != "subtract"
            or neuron.count_spikes
        ):
            return None
        steps = neuron.as_sequence(x)
        if not cpu_kernel.pools_exactly(
            steps, window, neuron.fire_level, neuron.threshold, scale.scale
        ):
            return None
        t, b, c, h, w = steps.shape
        out, shape = self._pooled, (t * b, c, h // window, w // window)
        if out is None or (out.shape, out.dtype) != (shape, steps.dtype):
            out = torch.empty(shape, dtype=steps.dtype, memory_format=torch.channels_last)
            self._pooled = out
        sequence = out.unflatten(0, (t, b))
        cpu_kernel.fire_scale_pool(
            steps, neuron.fire_level, -neuron.threshold, scale.scale, window, sequence
        )
        neuron.last_neurons_per_sample = steps[0, 0].numel()
        return out


def _tiling_window(pool: nn.Module) -> int | None:
    """The window of an ``nn.AvgPool2d`` with square windows that tile its input (stride =
    kernel, no padding, ceil mode or divisor override), else ``None``."""
    if type(pool) is not nn.AvgPool2d:
        return None
    kernel, stride, padding = (
        (v, v) if isinstance(v, int) else tuple(v)
        for v in (pool.kernel_size, pool.stride, pool.padding)
    )
    plain = padding == (0, 0) and not pool.ceil_mode and pool.divisor_override is None
    return kernel[0] if plain and kernel == stride and kernel[0] == kernel[1] else None


class OutputIntegrator(MultiStepModule):
    """Non-spiking output: ``o_t = o_{t-1} + y_t`` with ``o_0 = 0`` (sequential adds)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        trace = self.run_sequence(self.as_sequence(y))
        return trace.reshape(-1, *trace.shape[2:])

    def run_sequence(self, y: torch.Tensor) -> torch.Tensor:
        """Integrate ``y`` of shape ``[T, B, ...]``; return the trace ``[T, B, ...]`` (at least
        float32: a bfloat16 ``y`` from a linear layer under autocast is summed in float32)."""
        y = y.to(torch.promote_types(y.dtype, torch.float32))
        o = torch.zeros_like(y[0])
        trace = torch.empty_like(y)
        for t in range(y.shape[0]):
            o = o + y[t]
            trace[t] = o
        return trace
