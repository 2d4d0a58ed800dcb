"""Differentiable Lyapunov spectra of RNN ensembles (the Benettin / QR method).

A Lyapunov exponent is the average exponential growth rate, per time step, of an infinitesimal perturbation of the
state. For the step Jacobians ``J_t = dh_t / dh_{t-1}`` along a trajectory, the long-term Jacobian
``J_T ... J_1`` stretches a k-dimensional volume by ``exp(T (lambda_1 + ... + lambda_k))``. To measure the first k
rates without overflow, push an orthonormal basis Q (S x k) through the Jacobians and re-orthonormalize with a QR
decomposition every ``t_ons`` steps: ``J Q = Q' R``. The diagonal of R holds the stretching of each successive
direction orthogonal to the previous ones, and

    lambda_i = (1 / T_acc) * sum over QR steps of log |R_ii|        (nats per time step)

where T_acc counts the steps after the transient. Every operation here (the state update, ``J Q``, ``torch.linalg.qr``
and ``log|diag R|``) is differentiable, so the exponents can be trained: that is gradient flossing.

The package: ``api`` (``lyapunov_spectrum``: validation, engine choice, error report), ``inputs`` (argument checks,
QR schedule), ``tangent`` (tangent steps of any cell), ``reference`` (the reference loop), ``fast`` /
``fast_forward`` / ``fast_backward`` (the fast TanhRNN engine), ``gated`` / ``gated_forward`` / ``gated_backward`` /
``gated_cells`` / ``gated_tangent`` (the fast engine for LSTM and GRU: floss_core's and single-layer torch.nn modules),
``windows`` (the fast engines' window and orthonormalization loop), ``qr`` (guarded Cholesky QR and the QR backward),
``runtime`` (worker threads and buffers), ``errors`` (the error report), ``window_report`` (the QR windows'
stretchings an ``info`` dict receives), ``batch_means`` and ``estimate`` (``spectrum_estimate``: standard errors,
finite-time exponents, runs to a target error), ``derived`` (Kaplan-Yorke dimension, sum of positive exponents),
``covariant`` (covariant Lyapunov vectors by Ginelli's method, angle helpers).

Two gradient modes:
    "full"      back-propagate through the state trajectory and the tangent recursion (the author's choice).
    "detached"  the state trajectory is computed without gradient; the gradient flows only through the Jacobians'
                explicit parameter dependence and the tangent recursion. Bounded in chaotic nets, but biased.
"""
from .api import DEFAULT_METHOD, DEFAULT_T_ONS, METHODS, fast_lyapunov_spectrum, lyapunov_spectrum, supports_fast
from .covariant import CovariantVectors, clv_angles, covariant_vectors, subspace_angle
from .derived import Derived, kaplan_yorke_dimension, positive_exponent_sum
from .estimate import SpectrumEstimate, spectrum_estimate
from .inputs import GRADIENT_MODES, check_finite_parameters, prepare_inputs
from .qr import cholesky_qr, qr_log_diag_backward
from .runtime import clear_workspace
from .tangent import jvp_tangent_step, tangent_step

__all__ = ["lyapunov_spectrum", "fast_lyapunov_spectrum", "tangent_step", "jvp_tangent_step", "supports_fast",
           "check_finite_parameters", "prepare_inputs", "cholesky_qr", "qr_log_diag_backward", "clear_workspace",
           "DEFAULT_METHOD", "DEFAULT_T_ONS", "METHODS", "GRADIENT_MODES", "spectrum_estimate", "SpectrumEstimate",
           "kaplan_yorke_dimension", "positive_exponent_sum", "Derived", "covariant_vectors", "CovariantVectors",
           "clv_angles", "subspace_angle"]
