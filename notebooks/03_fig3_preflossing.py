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
# # Figure 3: flossing before training improves success and speed at long delays
#
# **Claim.** Flossing the exponents to zero before training (preflossing) makes networks learn delayed copy and
# delayed XOR tasks at delays where plain training fails. The preflossed networks also reach the criterion in fewer
# training steps.
#
# **What to look for.** (a, b) test accuracy during training at a long delay, with and without preflossing;
# (c) success rate vs delay (with counts): both succeed at short delays, preflossing keeps succeeding longer, both
# fail at the longest; (d) steps to criterion of the successful networks vs delay.
#
# **Runtime.** About 14 minutes (833 s) on 2 CPU cores at the defaults (shared with figure 4: the same cached sweep
# holds all three conditions).

# %%
import matplotlib.pyplot as plt
import numpy as np

from floss_core import experiments
from floss_core.repro import plotting
from floss_core.repro.cache import cached

plotting.setup()

# %% tags=["parameters"]
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
cluster = None  # a Dask scheduler address ("tcp://HOST:PORT") for the shards (./run_all.sh --cluster); None: here
tasks = ["copy", "xor"]  # delayed copy and delayed XOR (see floss_core.tasks)
delays = [10, 20, 30, 40, 60, 90]  # d, the longest lag (the author's XOR "delay" is d/2): the x axis
n_networks = 5  # networks (seeds) per task, delay and condition
seq_len = 150  # T: the author's 300, halved to fit the 2-core budget
batch = 16  # sequences per training step (the author's; a parameter so that quick mode can shrink it)
model = {}  # the author's tanh RNN (80 units, gain 1)
train = {"n_steps": 1500, "record_k": 8}  # 3001 steps halved for the budget; record lambda_1..8, not all 75
floss = {}  # the author's flossing: 75 exponents, 55-step trajectories, the full gradient
schedule = {"episode_steps": 100}  # episodes during training of 100 flossing steps, not 500, for the budget
encoding = {"kind": "pm1"}  # +-1 bits: what these figures were made with; the author's b * I1 / C is the default

# %%
sweep = experiments.build(experiments.DelaySweep, tasks=tasks, delays=delays, n_networks=n_networks,
                          seq_len=seq_len, batch=batch, model=model, train=train, floss=floss, schedule=schedule,
                          encoding=encoding,
                          seed=seed)
res = cached("delay_sweep", {"sweep": sweep, "device": device},
             lambda: experiments.delay_sweep(sweep, device=device, progress=not quick, cluster=cluster))
summary = {task: experiments.summarize_delay_sweep(res, task, compare=["none", "pre"]) for task in tasks}

# %%
shown = ["none", "pre"]
colors = plotting.CONDITION_COLORS
fig, axes = plt.subplots(1, 4, figsize=(19, 4.3))
for ax, task, letter in zip(axes, tasks, "ab"):
    s = summary[task]
    d_idx = s["hardest_informative_delay_index"]
    for c in shown:
        acc = s["smoothed_accuracy"][c][:, d_idx]  # (steps - window + 1, S)
        steps = np.arange(sweep.train.n_steps)[-acc.shape[0]:]  # the last step of each window
        plotting.median_band(ax, steps, acc, axis=1, color=colors[c], label=c)
    ax.set(xlabel="training step", ylabel="test accuracy (running mean)", ylim=(0.4, 1.02),
           title=f"({letter}) {task}, d = {delays[d_idx]}")
    ax.legend()
for task, ls in zip(tasks, plotting.LINESTYLES):
    for c in shown:
        plotting.success_vs_delay(axes[2], delays, summary[task]["success"][c], label=f"{task}, {c}", color=colors[c],
                                  n_networks=n_networks, linestyle=ls)
        plotting.steps_vs_delay(axes[3], delays, summary[task]["steps_to_criterion"][c], label=f"{task}, {c}",
                                color=colors[c], linestyle=ls)
axes[2].set(title="(c) success vs delay")
axes[3].set(xlabel="delay d", ylabel="steps to criterion (median of successes)", title="(d) learning speed")
for ax in axes[2:]:
    ax.legend(fontsize=7)
plotting.caption(fig, dict(N=sweep.model.n_hidden, g=sweep.model.gain, networks=n_networks,
                           steps=sweep.train.n_steps, batch=batch, T=seq_len, k=sweep.floss.k,
                           E_p=sweep.schedule.pre_steps, criterion="running mean (50 steps) >= 0.9 to the end",
                           bands="median and quartiles"))
plotting.save(fig, "fig3_preflossing");

# %%
numbers = {}
for task in tasks:
    for c in ["none", "pre"]:
        numbers.update(plotting.success_counts(f"{task}_{c}", delays, summary[task]["success"][c]))
plotting.record(numbers);

# %% [markdown]
# ## What we found
#
# **Figure 3, reproduced in direction, not in strength.** Successes out of 5 at d = 10, 20, 30, 40, 60, 90 (N = 80,
# 1500 training steps, T = 150): copy, plain 5, 2, 0, 0, 0, 0; preflossed 5, 5, 4, 0, 0, 0. XOR, plain 5, 0, 0, 0, 0, 0;
# preflossed 5, 4, 0, 0, 0, 0. Preflossing succeeds at one or two delays where plain training fails; with 5 networks per
# delay the largest differences (copy d = 30 and XOR d = 20, 4 of 5 against 0 of 5) give Fisher's exact p = 0.048
# (two-sided, not corrected for the 12 delays compared), and earlier runs moved counts by +-1.
#
# (The same verdict as the README's "What our figures show"; the counts are from the committed run.)
