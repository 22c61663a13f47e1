"""Faithfulness metrics: perturbation curves (MoRF/LeRF, ABPC, AU-MSE), leave-one-out agreement,
conservation and concentration, localisation, the papers' own protocols (absLRP's GAE; PA-LRP's token
insertion/pruning and pixel perturbation) — and the attribution functions they compare.

Every metric takes an attribution function `fn(model, inputs, target) -> relevance`, so LRP presets and
the baselines (gradient × input, integrated gradients, random) are measured the same way.
"""

from .attributions import Attribution, gradient_x_input, integrated_gradients, lrp, random_attribution
from .features import Features, images, tokens
from .gae import GAE, gae
from .leave_one_out import LeaveOneOut, leave_one_out
from .localisation import Localisation, localisation
from .perturbation import Curves, flipping_fractions, perturbation_curves
from .pixel_perturbation import PixelCurves, gaussian_blur, pixel_perturbation
from .summary import completeness_error, gini
from .token_curves import TokenCurve, insertion_curve, pruning_curve

__all__ = [
    "GAE",
    "Attribution",
    "Curves",
    "Features",
    "LeaveOneOut",
    "Localisation",
    "PixelCurves",
    "TokenCurve",
    "completeness_error",
    "flipping_fractions",
    "gae",
    "gaussian_blur",
    "gini",
    "gradient_x_input",
    "images",
    "insertion_curve",
    "integrated_gradients",
    "leave_one_out",
    "localisation",
    "lrp",
    "perturbation_curves",
    "pixel_perturbation",
    "pruning_curve",
    "random_attribution",
    "tokens",
]
