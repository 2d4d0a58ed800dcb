# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: gradient flossing in four steps
#
# **Claim.** A vanilla tanh RNN with gain g = 2 is chaotic: its largest Lyapunov exponent $\lambda_1$ is positive,
# so perturbations of the state, and the errors back-propagated through time, grow like $e^{\lambda_1 \tau}$ over a
# lag $\tau$. *Gradient flossing* (Engelken, NeurIPS 2023) treats the first k exponents as a differentiable loss,
# $\frac{1}{k}\sum_{i \le k} \lambda_i^2$, and drives them towards zero by gradient descent on the weights; then
# gradients neither explode nor vanish along those k directions and learning long memories gets easier.
#
# **What to look for.** (1) $\lambda_1 \approx 0.1$ per step before flossing; (2) $\lambda_1$ falls towards 0 during
# flossing and the top of the spectrum flattens; (3) the gradient norm stops growing exponentially with the lag;
# (4) on a delayed-copy task the preflossed networks reach high accuracy at least as fast as the plain ones.
#
# **Runtime.** 69 s on 2 CPU cores at the defaults below (`./run_all.sh` on a 2-core Intel Xeon, 2026-12-02). The
# flossing step dominates and its result is cached, so a rerun only re-plots. `./run_all.sh --quick 00` runs a
# shrunken version.
#
# Everything computed here is a call into the `floss_core` package; the notebook only chooses parameters and plots.

# %%
import copy
import dataclasses

import matplotlib.pyplot as plt
import torch

from floss_core import FlossConfig, FlossSchedule, TanhRNN, TaskConfig, TrainConfig, floss, lyapunov_spectrum, train
from floss_core.diagnostics import gradient_norm_profile, success
from floss_core.repro import plotting
from floss_core.repro.cache import cached

plotting.setup()

# %% [markdown]
# ## Parameters
#
# Paper-like defaults, shrunk to tutorial size. `run_all.sh --quick` (and the notebook tests) override them with the
# small values in `notebooks/quick_params.yaml`; `--device cuda` sets `device`.

# %% tags=["parameters"]
quick = False  # smoke-test mode: only switches off progress bars (the sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0  # seeds every random number of this notebook
n_networks = 8  # E, independent networks in the ensemble
n_hidden = 64  # N, units per network
gain = 2.0  # g, recurrent weights W_ij ~ N(0, g^2 / N); chaotic for g > 1
spectrum_steps = 500  # steps of the trajectories that measure full spectra (the first quarter is transient)
spectrum_batch = 4  # trajectories averaged per network
k = 16  # number of exponents flossed
floss_steps = 400  # flossing (Adam) steps
profile_steps = 100  # longest lag tau of the gradient-norm profile
delay = 10  # d of the delayed-copy task: the target at step t is the input bit of step t - d
seq_len = 60  # T, steps per training sequence
train_steps = 300  # training steps, each on a fresh batch of 16 sequences

# %% [markdown]
# ## 1. An ensemble of chaotic networks
#
# `TanhRNN` holds E independent networks as one module (every parameter has a leading network dimension), so the
# whole ensemble runs as one batched computation. Each network follows
# $x_t = W \tanh(x_{t-1}) + b + U s_t$ with $W_{ij} \sim \mathcal N(0, g^2/N)$.
#
# `lyapunov_spectrum` pushes an orthonormal basis of k tangent vectors through the step Jacobians and
# re-orthonormalizes it with a QR decomposition every step; the average log-stretching on the diagonal of R gives
# $\lambda_1 \ge \dots \ge \lambda_k$ in nats per step, one spectrum per network, shape (E, k). With `inputs=None`
# it measures the autonomous (zero-input) dynamics, which is also what is flossed below. All randomness comes from
# explicit `torch.Generator`s: same seed, same numbers.

# %%
def rng(stage):
    """The generator of one stage of this notebook (a different stream per stage, all from `seed`)."""
    return torch.Generator(device).manual_seed(1000 * seed + stage)


initial = TanhRNN(1, n_hidden, 1, gain=gain, n_networks=n_networks, generator=rng(0), device=device)


def full_spectrum(model):
    """All N exponents of every network, (E, N), on the same zero-input trajectories for every model."""
    with torch.no_grad():  # the default (fast) engine; method="reference" gives the same numbers to roundoff
        return lyapunov_spectrum(model, None, n_hidden, n_steps=spectrum_steps, batch=spectrum_batch,
                                 generator=rng(1)).cpu()


lam_before = full_spectrum(initial)  # (E, N)
print(f"lambda_1 over {n_networks} networks: median {lam_before[:, 0].median():.3f} nats/step, "
      f"range {lam_before[:, 0].min():.3f} .. {lam_before[:, 0].max():.3f}")

# %% [markdown]
# ## 2. Flossing
#
# `FlossConfig` collects the settings of one flossing step: the number k of exponents flossed (towards `target`
# = 0), the trajectory (`batch` trajectories of `seq_len` steps, the first `n_transient` not averaged), the Adam
# learning rate, the inputs (`"zero"`: the autonomous dynamics) and the gradient mode. `"detached"` does not
# back-propagate through the state trajectory, only through the Jacobians and the QR steps, which keeps the gradient
# bounded in chaotic networks (the paper's `"full"` gradient grows like $e^{\lambda_1 T}$).
#
# `floss(model, n_steps, config=...)` updates W, U and b of every network in place and returns a `FlossResult` with
# the exponents measured before each update, shape (n_steps, E, k).
#
# The call is wrapped in `floss_core.repro.cache.cached`: the result (the flossed weights and the exponents) is
# stored on disk under a key made of the parameters below and the version of the library code, so rerunning the
# notebook only re-plots, and changing a parameter or the library recomputes.

# %%
floss_config = FlossConfig(k=k, gradient="detached", input="zero", batch=8, seq_len=100, n_transient=30, lr=1e-3)


def run_flossing():
    model = copy.deepcopy(initial)
    result = floss(model, floss_steps, config=floss_config, generator=rng(2), progress=not quick)
    return {"state": model.state_dict(), "exponents": result.exponents, "failed": result.failed}


net_params = dict(seed=seed, device=device, n_networks=n_networks, n_hidden=n_hidden, gain=gain)
floss_params = dict(net_params, floss_steps=floss_steps, floss=dataclasses.asdict(floss_config))
flossing = cached("tutorial_floss", floss_params, run_flossing)
flossed = copy.deepcopy(initial)
flossed.load_state_dict(flossing["state"])
lam_after = full_spectrum(flossed)  # (E, N)
print(f"lambda_1 median: {lam_before[:, 0].median():.3f} before, {lam_after[:, 0].median():.3f} after "
      f"{floss_steps} flossing steps ({int(flossing['failed'].sum())} networks failed)")

# %% [markdown]
# Left: $\lambda_1$ of each network along the flossing run (median over networks, shaded: inter-quartile range).
# Right: the whole spectrum before and after; flossing moves the first k exponents (left of the dotted line)
# towards zero and leaves the rest of the spectrum largely in place.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.5, 2.6), layout="constrained")
steps = torch.arange(flossing["exponents"].shape[0])
plotting.median_band(ax1, steps, flossing["exponents"][:, :, 0], axis=1, color="C1")
ax1.axhline(0, color="0.5", lw=0.8, ls=":")
ax1.set(xlabel="flossing step", ylabel=r"$\lambda_1$ (nats / step)", title="flossing")
index = torch.arange(1, n_hidden + 1)
plotting.median_band(ax2, index, lam_before, label="before", color="C0")
plotting.median_band(ax2, index, lam_after, label="after flossing", color="C1")
ax2.axvline(k + 0.5, color="0.5", lw=0.8, ls=":")
ax2.axhline(0, color="0.5", lw=0.8, ls=":")
ax2.set(xlabel="index i", ylabel=r"$\lambda_i$ (nats / step)", title="Lyapunov spectrum")
ax2.legend()
plotting.caption(fig, dict(net_params, k=k, floss_steps=floss_steps))
plotting.save(fig, "tutorial_flossing");

# %% [markdown]
# ## 3. Gradient norms over long lags
#
# `gradient_norm_profile(model, inputs)` back-propagates a loss read out at the last step and returns
# $\lVert \partial \mathcal L / \partial h_{t-\tau} \rVert$ for every lag $\tau$, shape (E, T). In a chaotic network
# it grows like $e^{\lambda_1 \tau}$ (exploding gradients); after flossing it should stay within a few orders of
# magnitude. The norms span many decades, so they are measured on float64 copies of the networks.

# %%
def profile(model):
    """||d loss / d h_{t - tau}|| for tau = 0..profile_steps - 1, (E, profile_steps), in float64."""
    return gradient_norm_profile(copy.deepcopy(model).double(), None, n_steps=profile_steps, batch=spectrum_batch,
                                 generator=rng(3)).cpu()


grad_before, grad_after = profile(initial), profile(flossed)  # (E, T) each
tau = torch.arange(profile_steps)
# average growth rate of the log gradient norm per step of lag: about lambda_1 when the gradients explode
growth_before = ((grad_before[:, -1].log() - grad_before[:, 0].log()) / (profile_steps - 1)).median()
growth_after = ((grad_after[:, -1].log() - grad_after[:, 0].log()) / (profile_steps - 1)).median()
print(f"growth rate of log ||grad|| per step: {growth_before:.3f} before, {growth_after:.3f} after flossing")

fig, ax = plt.subplots(figsize=(3.4, 2.6), layout="constrained")
plotting.median_band(ax, tau, grad_before, label="before", color="C0")
plotting.median_band(ax, tau, grad_after, label="after flossing", color="C1")
ax.set(yscale="log", xlabel=r"lag $\tau$ (steps)", ylabel=r"$\|\partial \mathcal{L} / \partial h_{t-\tau}\|$",
       title="gradient norm")
ax.legend()
plotting.caption(fig, dict(net_params, k=k, floss_steps=floss_steps))
plotting.save(fig, "tutorial_gradients");

# %% [markdown]
# ## 4. Training on a delayed-copy task, with and without preflossing
#
# `TaskConfig(name="copy", delay=d)` streams random bits; the target at step t is the bit of step $t - d$
# (undefined, and masked out, for $t < d$). The networks see the bits through an `InputEncoding`: the author's
# $s_t = b_t I_1 / C$ by default (bits $b_t \in \{0, 1\}$, amplitude $I_1 = 1$, C channels);
# `InputEncoding("pm1")` gives zero-mean $s_t = 2 b_t - 1$ instead.
# `train` runs backpropagation through time with Adam on fresh batches, one independent optimizer state per network,
# and returns a `History` whose `accuracy` (n_steps, E) is measured on each fresh batch before the update, i.e. a
# test accuracy.
#
# Both runs start from the same networks: the plain run from the initial ones, the preflossed run from the flossed
# ones of step 2 (`FlossSchedule.none()`: no further flossing). Passing `schedule=FlossSchedule.pre(n)` to `train`
# would do both in one call; reusing the flossed networks saves that time here.

# %%
task = TaskConfig(name="copy", delay=delay, seq_len=seq_len, batch=16)  # the author's input encoding
train_config = TrainConfig(n_steps=train_steps, record_every=0)


def run_training():
    accuracy = {}
    for label, start in (("plain", initial), ("preflossed", flossed)):
        model = copy.deepcopy(start)
        history = train(model, task, config=train_config, schedule=FlossSchedule.none(), generator=rng(4),
                        progress=not quick)
        accuracy[label] = history.accuracy  # (n_steps, E)
    return accuracy


train_params = dict(floss_params, task=dataclasses.asdict(task), train=dataclasses.asdict(train_config))
accuracy = cached("tutorial_train", train_params, run_training)
for label, acc in accuracy.items():
    reached = success(acc, 0.95, steps_dim=0)  # (E,): the accuracy reached 0.95 and stayed there to the end
    print(f"{label:>10}: final accuracy median {acc[-1].median():.3f}, "
          f"{int(reached.sum())}/{n_networks} networks above 95% at the end")

# %%
fig, ax = plt.subplots(figsize=(3.4, 2.6), layout="constrained")
for (label, acc), color in zip(accuracy.items(), ("C0", "C1")):
    plotting.median_band(ax, torch.arange(acc.shape[0]), acc, axis=1, label=label, color=color)
ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
ax.set(xlabel="training step", ylabel="accuracy", title=f"delayed copy, d = {delay}", ylim=(0.4, 1.02))
ax.legend()
plotting.caption(fig, dict(net_params, k=k, floss_steps=floss_steps, delay=delay, seq_len=seq_len))
plotting.save(fig, "tutorial_training");

# %% [markdown]
# ## Key numbers
#
# Every notebook ends by recording its key numbers (`<figures>/<notebook>_numbers.json`); the notebook tests check
# that they are finite.

# %%
plotting.record({
    "lambda1_median_before": lam_before[:, 0].median(),
    "lambda1_median_after": lam_after[:, 0].median(),
    "grad_growth_rate_before": growth_before,
    "grad_growth_rate_after": growth_after,
    "final_accuracy_median_plain": accuracy["plain"][-1].median(),
    "final_accuracy_median_preflossed": accuracy["preflossed"][-1].median(),
});

# %% [markdown]
# ## What we found
#
# At the defaults above (8 networks, medians; `figures/00_tutorial_numbers.json`): the chaotic networks start with
# $\lambda_1 \approx 0.12$ per step and end at $\approx 0.01$ after 400 flossing steps; the log gradient norm grows by
# about 0.14 per step of lag before flossing and by about 0.02 after; on delayed copy with d = 10 the final accuracy
# is about 0.92 plain and 1.00 preflossed. The networks are chaotic and run in float32, so the third digit of these
# numbers depends on the CPU (the median $\lambda_1$ before flossing is 0.1170 on one 2-core CPU and 0.1183 on
# another); the numbers are given at the precision that holds. Quick mode runs far too few steps for them to mean
# anything.
