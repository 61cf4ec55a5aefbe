"""Gaussian randomized smoothing (Cohen et al. 2019) and what the book does with it.

The smoothed classifier of a base classifier f at noise level sigma is
``g(x) = argmax_c P(f(x + delta) = c)``, ``delta ~ N(0, sigma^2 I)``; if its top class has
probability at least p_A >= 1/2, g is constant on the l2 ball of radius ``sigma * Phi^-1(p_A)``
(Thm. 1).  CERTIFY returns that radius for a lower confidence bound on p_A, or abstains; each answer
is wrong with probability at most alpha.  One module per idea; every public name is re-exported
here (``from rs_lib import smoothing; smoothing.Smooth``):

| module | what | public names |
|---|---|---|
| ``classifier`` | PREDICT and CERTIFY (the reference ``core.py``), their statistics | ``Smooth``, ``Certificate``, ``ABSTAIN``, ``lower_confidence_bound``, ``prediction_from_counts`` |
| ``sampler`` | class counts under noise: device, batching, ``compile``, ``channels_last``, autocast, per-example generators | ``NoiseSampler``, ``example_generator``, ``noise_block``, ``model_device`` |
| ``dataset`` | certify a dataset into a resumable, shardable TSV (``certify.py``) | ``CertifySettings``, ``Selection``, ``certify_dataset`` |
| ``tsv`` | the certify TSV format, its settings sidecar, reading and merging | ``read_certify_tsv``, ``merge_certify_tsv``, ``check_certify_output``, ``TSV_COLUMNS`` |
| ``curves`` | certified accuracy and its summaries | ``certified_accuracy``, ``acr``, ``abstention_rate``, ``upper_envelope``, ``l2_to_linf``, ``high_prob_accuracy``, ``summary_table``, ``radius_cap`` |
| ``runs`` | certification of a stored run, cached (and sharded) in its directory | ``RunCertification``, ``run_sigma``, ``certify_run``, ``merge_certify_run``, ``certify_complete``, ``certify_params``, ``certify_file_name``, ``certify_indices`` |
| ``attack`` | PREDICT under attack: empirical robust accuracy (SmoothAdv §4.3) | ``SmoothedAttack``, ``PredictSettings``, ``empirical_accuracy``, ``EmpiricalAccuracy`` |
| ``interpolation`` | SmoothMix's confidence along x -> adversary (Fig. 2, 5) | ``SmoothMixAscent``, ``interpolation_confidence``, ``equal_confidence_ratio``, ``adversarial_interpolation`` |

Costs: PREDICT n and CERTIFY n0 + n forwards of f per input; the curves are free (pure functions
of a certify frame); an attack adds steps * num_noise forwards and backwards per input.
"""

from __future__ import annotations

from .attack import SMOOTHED_ATTACKS, EmpiricalAccuracy, PredictSettings, SmoothedAttack, empirical_accuracy
from .classifier import ABSTAIN, Certificate, Smooth, lower_confidence_bound, prediction_from_counts
from .curves import (
    abstention_rate, acr, certified_accuracy, high_prob_accuracy, l2_to_linf, radius_cap, summary_table,
    upper_envelope,
)
from .dataset import CertifySettings, Selection, certify_dataset
from .interpolation import (
    SmoothMixAscent, adversarial_interpolation, equal_confidence_ratio, interpolation_confidence,
)
from .runs import (
    RunCertification, certify_complete, certify_file_name, certify_indices, certify_params, certify_run,
    merge_certify_run, run_sigma,
)
from .sampler import NOISE_BLOCK_VALUES, NoiseSampler, example_generator, model_device, noise_block
from .tsv import EXTRA_COLUMNS, TSV_COLUMNS, check_certify_output, merge_certify_tsv, read_certify_tsv

__all__ = [
    "ABSTAIN", "Certificate", "CertifySettings", "EXTRA_COLUMNS", "EmpiricalAccuracy", "NOISE_BLOCK_VALUES",
    "NoiseSampler", "PredictSettings", "RunCertification", "SMOOTHED_ATTACKS", "Selection", "Smooth",
    "SmoothMixAscent", "SmoothedAttack", "TSV_COLUMNS", "abstention_rate", "acr", "adversarial_interpolation",
    "certified_accuracy", "certify_complete", "certify_dataset", "certify_file_name", "certify_indices",
    "certify_params", "certify_run", "check_certify_output", "empirical_accuracy", "equal_confidence_ratio",
    "example_generator", "high_prob_accuracy", "interpolation_confidence", "l2_to_linf", "lower_confidence_bound",
    "merge_certify_run", "merge_certify_tsv", "model_device", "noise_block", "prediction_from_counts",
    "radius_cap", "read_certify_tsv", "run_sigma", "summary_table", "upper_envelope",
]
