"""ANN -> SNN conversion: validate, fold BatchNorm, calibrate thresholds, replace, finalize."""

from neurocuda.conversion.convert import convert, spiking_structure
from neurocuda.conversion.errors import ConversionError
from neurocuda.conversion.evaluate import SNNEvaluation, evaluate_snn
from neurocuda.conversion.fold import fold_batchnorms, folded_layer
from neurocuda.conversion.result import ConversionResult
from neurocuda.conversion.settings import ConversionConfig

__all__ = [
    "ConversionConfig",
    "ConversionError",
    "ConversionResult",
    "SNNEvaluation",
    "convert",
    "evaluate_snn",
    "fold_batchnorms",
    "folded_layer",
    "spiking_structure",
]
