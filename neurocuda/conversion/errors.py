"""Errors raised by the ANN -> SNN converter."""


class ConversionError(ValueError):
    """The ANN cannot be converted as it is; the message names the layer and the fix."""
