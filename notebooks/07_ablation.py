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
# # Ablation: does one of three alternatives to the author's setup change figure 4's result?
#
# **Claim (to test).** Three settings that the package offers besides the author's: +-1 input bits without the
# author's 1/C scaling, half the author's budget (1500 instead of 3001 training steps, T = 150 instead of 300,
# flossing episodes of 100 instead of 500 steps), and a new flossing Adam for the episodes during training (the
# author keeps one from preflossing on). Each arm starts from the author's settings and changes ONE of these, on one
# delayed task at a delay where the conditions differ, for the three conditions of figure 4 (no flossing,
# preflossing, flossing before and during training). The claim: at least one of these changes moves a condition's
# success rate.
#
# For the gated cells of figure 6, the number of flossed exponents k and the memory-gate initialization are
# measured in notebook 06.
#
# **What to look for.** Per arm, the success rates of the three conditions with 95% Wilson intervals; Fisher's
# exact p of each arm against the author's settings, per condition, in the numbers file.
#
# **Runtime.** 716 s at the defaults with `./run_all.sh` (two single-threaded Dask workers on a 2-core Intel Xeon,
# 2026-12-02; 1052 s on workers with Dask's default malloc setting; 9 networks per arm and condition; the
# half-budget arm costs a quarter, the episode-Adam arm runs only "pre+during": the Adam of the episodes changes
# nothing else).

# %%
from functools import partial

import matplotlib.pyplot as plt
import numpy as np

from floss_core import experiments
from floss_core.repro import plotting
from floss_core.repro.cache import cached
from floss_core.repro.numbers import difference_numbers, rate_numbers, rate_text

plotting.setup()

# %% tags=["parameters"]
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
cluster = None  # a Dask scheduler address ("tcp://HOST:PORT") for the shards (./run_all.sh --cluster); None: here
task = "copy"  # the delayed task of the ablation
delay = 40  # d: plain training fails here and preflossing succeeds (figure 3)
n_networks = 9  # networks (seeds) per arm and condition
seq_len = 300  # T, the author's
batch = 16  # sequences per training step, the author's
model = {}  # the author's tanh RNN (80 units, gain 1)
train = {"record_every": 0}  # the author's 3001 steps; no exponents recorded (not shown here)
floss = {}  # the author's flossing: 75 exponents, 55-step trajectories, the full gradient
schedule = {}  # the author's: 500 flossing steps before training, 2 episodes of 500 at training steps 100, 200
# the arms: each changes the author's settings above in one respect (dicts update the matching parameter)
arms = {
    "author": {},
    "+-1 inputs": {"encoding": {"kind": "pm1"}},
    "half budget": {"seq_len": 150, "train": {"n_steps": 1500}, "schedule": {"episode_steps": 100}},
    "new episode Adam": {"episode_adam": "new", "conditions": ["pre+during"]},  # the other two do not change
}

# %%
base = dict(tasks=[task], delays=[delay], n_networks=n_networks, seq_len=seq_len, batch=batch, model=model,
            train=train, floss=floss, schedule=schedule, seed=seed)


def arm_params(change: dict) -> dict:
    """The base parameters with one arm's change (a dict parameter is updated, not replaced)."""
    out = dict(base)
    for key, value in change.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


sweeps = {arm: experiments.build(experiments.DelaySweep, **arm_params(change)) for arm, change in arms.items()}
res = {arm: cached("delay_sweep", {"sweep": sweep, "device": device},
                   partial(experiments.delay_sweep, sweep, device=device, progress=not quick, cluster=cluster))
       for arm, sweep in sweeps.items()}
conditions = list(experiments.CONDITIONS)
success = {arm: experiments.summarize_delay_sweep(r, task)["success"] for arm, r in res.items()}  # {c: (1, S)}


def label(arm: str) -> str:
    return arm.replace(" ", "_").replace("+-", "pm")


numbers = {}
for arm in arms:
    ran = res[arm]["conditions"]
    for c in ran:
        numbers.update(rate_numbers(f"{label(arm)}_{c}", success[arm][c][0]))
        if arm != "author":
            numbers.update(difference_numbers(f"{label(arm)}_{c}_vs_author", success[arm][c][0],
                                              success["author"][c][0]))
    for a, b in [("pre", "none"), ("pre+during", "none"), ("pre+during", "pre")]:
        if a in ran and b in ran:
            numbers.update(difference_numbers(f"{label(arm)}_{a}_vs_{b}", success[arm][a][0], success[arm][b][0]))

# %%
colors = plotting.CONDITION_COLORS
fig, ax = plt.subplots(figsize=(9, 4.3))
width = 0.8 / len(conditions)
for i, c in enumerate(conditions):
    shown = [j for j, arm in enumerate(arms) if c in res[arm]["conditions"]]  # the arms that ran condition c
    x = np.array(shown) + (i - (len(conditions) - 1) / 2) * width
    rates = [numbers[f"{label(arm)}_{c}_rate"] for arm in arms if c in res[arm]["conditions"]]
    low = [numbers[f"{label(arm)}_{c}_low"] for arm in arms if c in res[arm]["conditions"]]
    high = [numbers[f"{label(arm)}_{c}_high"] for arm in arms if c in res[arm]["conditions"]]
    ax.bar(x, rates, width, color=colors[c], label=c, alpha=0.85)
    ax.errorbar(x, rates, yerr=[np.subtract(rates, low), np.subtract(high, rates)], fmt="none", ecolor="k", lw=0.8,
                capsize=2)
ax.set_xticks(np.arange(len(arms)), list(arms))
ax.set(ylabel="success rate (95% Wilson)", ylim=(0, 1.05), title=f"{task}, d = {delay}: one change at a time")
ax.legend()
s = sweeps["author"]
plotting.caption(fig, dict(N=s.model.n_hidden, g=s.model.gain, networks=n_networks, steps=s.train.n_steps,
                           T=seq_len, batch=batch, k=s.floss.k, E_p=s.schedule.pre_steps, E_f=s.schedule.every,
                           E_i=s.schedule.episode_steps, N_i=s.schedule.max_episodes,
                           arms="; ".join(f"{a}: {c or 'as the author'}" for a, c in arms.items())))
plotting.save(fig, "ablation");

# %%
plotting.record(numbers)
for arm in arms:
    print(f"{arm:>18}: " + ", ".join(f"{c} {rate_text(success[arm][c][0])}" for c in res[arm]["conditions"]));

# %% [markdown]
# ## What we found
#
# **No single alternative changes a condition's success rate significantly at copy d = 40, and figure 4's ordering
# (pre+during >= pre > none) holds in the counts of every arm that ran those conditions.** Successes out of 9 (95%
# Wilson intervals), Fisher's exact test against the author's settings, two-sided, uncorrected:
#
# - author's settings: none 0/9 (0-0.30), pre 9/9 (0.70-1), pre+during 9/9 (0.70-1).
# - +-1 inputs: none 0/9, pre 5/9 (0.27-0.81, p = 0.082), pre+during 8/9 (0.57-0.98, p = 1).
# - half budget (T = 150, 1500 steps, episodes of 100): none 0/9, pre 7/9 (0.45-0.94, p = 0.47), pre+during 8/9
#   (p = 1).
# - new Adam per flossing episode: pre+during 9/9 (p = 1).
#
# In the three arms that ran plain training, preflossing beats it (largest p = 0.029) and so does pre+during
# (largest p = 0.00041); pre+during against pre is significant in none. The +-1 encoding weakens preflossing alone
# the most (9/9 -> 5/9, not significant: with 9 networks per condition a difference of 4 networks or fewer cannot
# reach p < 0.05); with flossing during training as well 8/9 succeed (against 5/9 preflossed only, p = 0.29;
# against the author's 9/9, p = 1). So at this delay none of the three alternatives alone significantly changes a
# rate or overturns figure 4's ordering; their combination, smaller samples and other delays are untested.
