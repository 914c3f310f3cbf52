"""The one place a device setting becomes a ``torch.device``.

Settings accept ``auto`` (the CUDA GPU when there is one, else the CPU), ``gpu``/``cuda``/``cuda:N``
(a CUDA GPU, or one clear error) and ``cpu``. Deploy targets, scripts and the conversion
evaluation all call :func:`resolve_device`; the deploy configs pass the trainer's accelerator, so
``trainer=cpu`` keeps a whole run on the CPU.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = "auto, gpu, cuda, cuda:N, cpu"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``device`` as a torch device: ``auto`` picks CUDA when ``torch.cuda.is_available()``."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("gpu", "cuda") or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} needs a CUDA GPU, but torch.cuda.is_available() is False on "
                "this machine. Use device=auto (the GPU when there is one) or device=cpu."
            )
        return torch.device("cuda" if name == "gpu" else name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Unknown device {device!r}; use one of: {DEVICE_CHOICES}.")


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on ``device`` is done (a CUDA GPU runs asynchronously; a CPU has
    nothing queued): what a wall-clock timing does before it reads the clock. It waits on
    ``device`` itself, not on the current GPU, which may be another one (``cuda:1``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
