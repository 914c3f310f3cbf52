"""Find one callback of a trainer by type: the one way callbacks reach each other's results."""

from __future__ import annotations

from typing import TypeVar

import lightning as L

C = TypeVar("C", bound=L.Callback)


def find_callback(trainer: L.Trainer, kind: type[C]) -> C | None:
    """The trainer's first callback of type ``kind``, or None."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)
