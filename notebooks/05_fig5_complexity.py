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
# # Figure 5: tasks of higher dimension need more flossed exponents
#
# **Claim.** A task that requires carrying C independent bits over a delay needs error signals along C directions
# at once, so flossing more exponents (k) helps more as C grows. The accuracy reached after training rises with k,
# and the k needed grows with the task dimension.
#
# **What to look for.** Final accuracy vs k (log axis), one curve per number of channels C: for C = 1 a few
# exponents suffice; for larger C the curve rises later.
#
# **Runtime.** About 7 minutes (430 s) on 2 CPU cores at the defaults.

# %%
import matplotlib.pyplot as plt
import numpy as np

from floss_core import experiments
from floss_core.diagnostics import final_accuracy
from floss_core.repro import plotting
from floss_core.repro.cache import cached

plotting.setup()

# %% tags=["parameters"]
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
cluster = None  # a Dask scheduler address ("tcp://HOST:PORT") for the shards (./run_all.sh --cluster); None: here
channels = [1, 2, 4]  # C, the task dimension: one curve each (every channel carries its own delayed copy)
ks = [0, 1, 4, 16, 64]  # exponents flossed before training (0: none): the x axis
delay = 15  # d: 15 in our runs (the sweep's default: 20)
n_networks = 5  # networks (seeds) per C and k
seq_len = 100  # T: the author's 300, shortened like figures 3-4's to fit the 2-core budget
batch = 16  # sequences per training step (the author's; a parameter so that quick mode can shrink it)
model = {}  # the author's tanh RNN (80 units, gain 1)
train = {"n_steps": 1500}  # the author's 3001 steps halved, like figures 3-4's, for the budget
floss = {}  # the author's flossing (its k is replaced by each of ks)
schedule = {}  # the author's 500 flossing steps before training
encoding = {"kind": "pm1"}  # +-1 bits: what these figures were made with; the author's b * I1 / C is the default

# %%
sweep = experiments.build(experiments.ComplexitySweep, channels=channels, ks=ks, delay=delay,
                          n_networks=n_networks, seq_len=seq_len, batch=batch, model=model, train=train,
                          floss=floss, schedule=schedule, encoding=encoding, seed=seed)
res = cached("complexity_sweep", {"sweep": sweep, "device": device},
             lambda: experiments.complexity_sweep(sweep, device=device, progress=not quick, cluster=cluster))
final = {C: final_accuracy(acc) for C, acc in zip(channels, res["accuracy"])}  # (len(ks), S) each

# %%
fig, ax = plt.subplots(figsize=(6, 4.3))
x = np.array([max(k, 0.5) for k in ks])  # k = 0 drawn at 0.5 on the log axis
for C, c in plotting.colors(channels).items():
    plotting.median_band(ax, x, final[C], axis=1, color=c, label=f"C = {C} channel(s)", marker="o")
ax.set_xscale("log")
ax.set_xticks(x, [str(k) for k in ks])
ax.set(xlabel="k, exponents flossed before training", ylabel="final accuracy (last 100 steps)", ylim=(0.4, 1.02),
       title=f"{sweep.task}, d = {delay}")
ax.legend()
plotting.caption(fig, dict(N=sweep.model.n_hidden, g=sweep.model.gain, networks=n_networks,
                           steps=sweep.train.n_steps, T=seq_len, E_p=sweep.schedule.pre_steps,
                           bands="median and quartiles over networks"))
plotting.save(fig, "fig5_complexity");

# %%
numbers = {f"final_acc_C{C}_k{k}": float(final[C][j].median()) for C in channels for j, k in enumerate(ks)}
plotting.record(numbers);

# %% [markdown]
# ## What we found
#
# **Figure 5, partly reproduced, on a task of our own.** Copy task with d = 15 on C independent channels, final
# accuracy (median of 5): C = 1 is solved at every k (1.00); C = 2 needs flossing (0.50 at k = 0, 0.74 at k = 1, 0.79
# at k = 4, 0.84 at k = 16, 0.77 at k = 64); C = 4 stays near chance (at most 0.55, at k = 16). The author's task
# family is the hierarchical temporal XOR (`TaskConfig.hierarchical_xor`), not yet run here.
#
# (The same verdict as the README's "What our figures show"; the counts are from the committed run.)
