"""Faithfulness metrics: perturbation curves (MoRF/LeRF, ABPC, AU-MSE), leave-one-out agreement,
conservation and concentration, localisation — and the attribution functions they compare.

Every metric takes an attribution function `fn(model, inputs, target) -> relevance`, so LRP presets and
the baselines (gradient × input, integrated gradients, random) are measured the same way.
"""

from .attributions import Attribution, gradient_x_input, integrated_gradients, lrp, random_attribution
from .features import Features, images, tokens
from .leave_one_out import LeaveOneOut, leave_one_out
from .localisation import Localisation, localisation
from .perturbation import Curves, flipping_fractions, perturbation_curves
from .summary import completeness_error, gini

__all__ = [
    "Attribution",
    "Curves",
    "Features",
    "LeaveOneOut",
    "Localisation",
    "completeness_error",
    "flipping_fractions",
    "gini",
    "gradient_x_input",
    "images",
    "integrated_gradients",
    "leave_one_out",
    "localisation",
    "lrp",
    "perturbation_curves",
    "random_attribution",
    "tokens",
]
