"""Diagnostics of trained and untrained RNN ensembles.

Exploding and vanishing gradients are a statement about the long-term Jacobian ``P_tau = J_tau ... J_1`` (with
``J_t = dh_t / dh_{t-1}``): a loss at time t reaches the state tau steps earlier through ``P^T``, so gradients grow or
shrink like the singular values of P, ``sigma_i(tau) ~ exp(tau * lambda_i)`` with the Lyapunov exponents lambda_i.

    gradient_norm_profile               ||d loss(t) / d h_{t - tau}|| for every lag tau, in one backward pass.
    long_term_jacobian_singular_values  log sigma_1..k of P_tau for every tau = 1..T, in log space.
    condition_number                    log(sigma_1 / sigma_k) from those.
    steps_to_criterion, success         when a training run reached (and kept) a target accuracy.
    running_mean, final_accuracy        smoothing and the end of an accuracy curve.
    criterion_outcome                   the figures' criteria per network (failed training: no success).
    gate_statistics                     mean gate values of LSTMs and GRUs along a trajectory (saturation).
    success_rate, mean_interval,        intervals and tests over networks (scipy), for the figures' claims.
    compare_success, compare_means
    tolerance_verdicts                  whether "within the tolerance" survives the exponents' standard errors.
"""
from .gates import gate_statistics
from .gradients import gradient_norm_profile
from .jacobian import condition_number, long_term_jacobian_singular_values
from .outcome import criterion_outcome, final_accuracy, running_mean, steps_to_criterion, success
from .statistics import compare_means, compare_success, mean_interval, success_rate
from .tolerance import tolerance_verdicts

__all__ = ["gradient_norm_profile", "long_term_jacobian_singular_values", "condition_number", "steps_to_criterion",
           "success", "running_mean", "final_accuracy", "success_rate", "mean_interval", "compare_success",
           "compare_means", "gate_statistics", "criterion_outcome", "tolerance_verdicts"]
