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
# # Figure 6: preflossing LSTM and GRU networks
#
# **Claim (of the paper, tested here).** Gradient flossing is not specific to the vanilla RNN: the Lyapunov exponents
# of gated networks (LSTM with state (h, c), GRU) are computed and flossed the same way, and preflossing them helps
# them learn delayed tasks, as it does for the tanh RNN.
#
# **What to look for.** Success rate and final accuracy vs the number k of exponents flossed before training (k = 0:
# plain training) on delayed copy at a delay the plain networks learn only in part, with the gate that keeps the state
# (the LSTM's forget gate, the GRU's update gate) initialized with a bias of +1 (the usual remedy for LSTMs that
# forget too fast; at d = 20 it raised the plain LSTM's accuracy over PyTorch's bias 0, below). Beside them, what
# preflossing does to that gate: flossing k = H exponents (all S = H of the GRU's, half the LSTM's S = 2H) can reach
# lambda = 0 by saturating it (gate -> 1, and the LSTM's |c| grows) instead of balancing the dynamics; a small k
# should leave it near its initial value. The author has no gated-cell code: H, k, the delay and the initializations
# here are our own choices.
#
# **Runtime.** 1006 s (17 minutes) at the defaults with `./run_all.sh` on 2 CPU cores (two single-threaded Dask
# workers, the runner's default at paper scale; quiet machine, 2026-12-02; 1264 s before the workers started without
# Dask's malloc setting). In one process on 2
# threads (`--cluster none`) expect about 2.4x that: the d = 20 sweep below took 3191 s there, its d = 10 twin 1324 s
# on the cluster. Each k costs about a sixth of it.

# %%
from functools import partial

import matplotlib.pyplot as plt
import numpy as np

from floss_core import experiments
from floss_core.diagnostics import compare_means, success_rate
from floss_core.repro import plotting
from floss_core.repro.cache import cached
from floss_core.repro.numbers import difference_numbers, mean_numbers, rate_numbers

plotting.setup()

# %% tags=["parameters"]
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
cluster = None  # a Dask scheduler address ("tcp://HOST:PORT") for the shards (./run_all.sh --cluster); None: here
cells = ["lstm", "gru"]  # the gated architectures (the author's figures 3-5 use the tanh RNN)
memory_biases = [1.0]  # added to the forget (LSTM) / update (GRU) gate bias: +1, the baseline that trains
ks = [0, 1, 2, 4, 8, 16]  # flossed before training (0: plain training); 16 is H, all of the GRU's, half the LSTM's
tasks = ["copy"]  # delayed copy
delays = [13]  # d: plain bias +1 networks (9 each, 3001 steps) learn d 12 (LSTM 7/9, GRU 9/9), not d 15 (0/9, 1/9)
n_networks = 9  # networks (seeds) per cell, memory bias, k, task and delay (the author's figures use 9)
seq_len = 300  # T (the author's)
batch = 16  # sequences per training step (the author's; a parameter so that quick mode can shrink it)
model = {"n_hidden": 16}  # H, 16 units (LSTM state 32): our choice, to fit the 2-core budget at the author's T
train = {"n_steps": 3001, "record_every": 0}  # the author's 3001 steps; no exponents recorded during training
floss = {}  # the author's flossing (55-step trajectories, batch 1, Adam lr 1e-3); its k is each of ks
schedule = {}  # the author's 500 flossing steps before training (E_p)
gate_batch = 8  # trajectories of T steps per network for the gate statistics

# %%
sweep = experiments.build(experiments.GatedSweep, cells=cells, memory_biases=memory_biases, ks=ks, tasks=tasks,
                          delays=delays, n_networks=n_networks, seq_len=seq_len, batch=batch, model=model,
                          train=train, floss=floss, schedule=schedule, gate_batch=gate_batch, seed=seed)
res = cached("gated_sweep", {"sweep": sweep, "device": device},
             partial(experiments.gated_sweep, sweep, device=device, progress=not quick, cluster=cluster))
summary = experiments.summarize_gated_sweep(res)  # success, final accuracy: {cell: (biases, K, tasks, D, S)}
MEMORY_GATE = {"lstm": "forget", "gru": "update"}  # the gate that keeps the state
GATE_NUMBERS = {"lstm": ["forget", "abs_cell"], "gru": ["update"]}  # recorded per condition: the memory gate, |c|

# %%
x = np.arange(len(ks))  # k on a categorical axis
klabels = ["none" if k == 0 else str(k) for k in ks]
bias_colors = plotting.colors(memory_biases, "plasma", hi=0.7)
conds = [(j, task, i, d) for j, task in enumerate(tasks) for i, d in enumerate(delays)]
fig, axes = plt.subplots(2, len(cells) + 1, figsize=(4.2 * (len(cells) + 1), 7.5))
for col, cell in enumerate(cells):
    ax_ok, ax_acc = axes[0, col], axes[1, col]
    for b, bias in enumerate(memory_biases):
        for (j, task, i, d), ls in zip(conds, plotting.LINESTYLES):
            label = f"bias +{bias:g}, {task} d = {d}"
            ok = summary["success"][cell][b, :, j, i]  # (K, S)
            r = [success_rate(ok[q]) for q in range(len(ks))]
            rate = np.array([v["rate"] for v in r])
            err = np.array([[v["rate"] - v["low"] for v in r], [v["high"] - v["rate"] for v in r]])
            shift = 0.08 * (b - (len(memory_biases) - 1) / 2)  # side by side
            ax_ok.errorbar(x + shift, rate, yerr=err, color=bias_colors[bias], linestyle=ls, marker="o",
                           capsize=2, label=label)
            plotting.median_band(ax_acc, x + shift, summary["final_accuracy"][cell][b, :, j, i], axis=1,
                                 color=bias_colors[bias], linestyle=ls, marker="o", label=label)
    ax_ok.set(title=f"{cell.upper()}: success (95% Wilson intervals)", ylabel="success rate", ylim=(-0.05, 1.05))
    ax_acc.set(title=f"{cell.upper()}: final accuracy (median, quartiles)", ylabel="final accuracy (last 100 steps)",
               ylim=(0.4, 1.02))
    for ax in (ax_ok, ax_acc):
        ax.set_xticks(x, klabels)
        ax.set_xlabel("k, exponents flossed before training")
    ax_ok.legend(fontsize=6, loc="best")
ax_gate, ax_cell = axes[0, -1], axes[1, -1]
for cell, marker in zip(cells, "os"):
    for b, bias in enumerate(memory_biases):
        plotting.median_band(ax_gate, x, res["gates"][cell][MEMORY_GATE[cell]][b], axis=1, color=bias_colors[bias],
                             marker=marker, linestyle="-" if cell == "lstm" else "--",
                             label=f"{cell.upper()} {MEMORY_GATE[cell]} gate, bias +{bias:g}")
        if "abs_cell" in res["gates"][cell]:
            plotting.median_band(ax_cell, x, res["gates"][cell]["abs_cell"][b], axis=1, color=bias_colors[bias],
                                 marker=marker, label=f"{cell.upper()}, bias +{bias:g}")
ax_gate.set(title="memory gate after preflossing (k = none: before)", ylabel="mean gate value", ylim=(0, 1))
ax_cell.set(title="LSTM cell state after preflossing", ylabel="mean |c|", yscale="log")
for ax in (ax_gate, ax_cell):
    ax.set_xticks(x, klabels)
    ax.set_xlabel("k, exponents flossed before training")
    ax.legend(fontsize=6)
fig.tight_layout()
H = sweep.model.n_hidden
plotting.caption(fig, dict(H=H, S="2H (LSTM), H (GRU)", networks=n_networks, tasks="/".join(tasks),
                           d="/".join(map(str, delays)), T=seq_len, batch=batch, steps=sweep.train.n_steps,
                           lr=sweep.train.lr, clip=sweep.train.clip, E_p=sweep.schedule.pre_steps,
                           floss=f"T={sweep.floss.seq_len} ({sweep.floss.n_transient} transient), "
                                 f"batch {sweep.floss.batch}, lr {sweep.floss.lr}, {sweep.floss.gradient} gradient",
                           encoding=sweep.encoding.kind, init="PyTorch's + memory bias",
                           criterion="running mean (50 steps) >= 0.9 to the end",
                           gates=f"mean over {gate_batch} trajectories of T steps from h0, units and steps; "
                                 "bands: median and quartiles over networks"))
plotting.save(fig, "fig6_architectures");


# %%
def tag(cell, bias):
    return f"{cell}_bias{bias:g}"


def finite(acc):
    """The final accuracies of the networks whose training did not fail (NaN marks a failed one)."""
    return acc[acc.isfinite()]


def acc_test(prefix, a, b):
    """Permutation test of the mean final accuracies (seeded): the difference and its two-sided p (none where fewer
    than 2 networks of a condition trained without failing)."""
    a, b = finite(a), finite(b)
    if min(len(a), len(b)) < 2:
        return
    c = compare_means(a, b)
    numbers.update({f"{prefix}_difference": c["difference"], f"{prefix}_p": c["p"]})


numbers = {}
for cell in cells:
    for b, bias in enumerate(memory_biases):
        for q, k in enumerate(ks):
            for name in GATE_NUMBERS[cell]:  # before (k = 0) and after preflossing
                numbers.update(mean_numbers(f"{tag(cell, bias)}_k{k}_gate_{name}", res["gates"][cell][name][b, q]))
            for j, task, i, d in conds:
                prefix = f"{tag(cell, bias)}_k{k}_{task}_d{d}"
                ok = summary["success"][cell][b, q, j, i]  # (S,)
                numbers.update(rate_numbers(prefix, ok))
                acc = finite(summary["final_accuracy"][cell][b, q, j, i])
                if len(acc):  # none where every network of the condition failed
                    numbers.update(mean_numbers(f"{prefix}_acc", acc))
                if k:  # preflossed vs plain, same initialization: Fisher's exact test, permutation test of the
                    # mean final accuracy (informative where no network reaches the success criterion)
                    numbers.update(difference_numbers(f"{tag(cell, bias)}_{task}_d{d}_k{k}_vs_none", ok,
                                                      summary["success"][cell][b, 0, j, i]))
                    acc_test(f"{tag(cell, bias)}_{task}_d{d}_k{k}_vs_none_acc",
                             summary["final_accuracy"][cell][b, q, j, i], summary["final_accuracy"][cell][b, 0, j, i])
        if b:  # this initialization vs PyTorch's (memory_biases[0]), plain training
            for j, task, i, d in conds:
                q0 = ks.index(0) if 0 in ks else 0
                label = f"{cell}_{task}_d{d}_k{ks[q0]}_bias{bias:g}_vs_bias{memory_biases[0]:g}"
                numbers.update(difference_numbers(label, summary["success"][cell][b, q0, j, i],
                                                  summary["success"][cell][0, q0, j, i]))
                acc_test(f"{label}_acc", summary["final_accuracy"][cell][b, q0, j, i],
                         summary["final_accuracy"][cell][0, q0, j, i])
plotting.record(numbers);

# %% [markdown]
# ## What we found
#
# **Figure 6, not reproduced: where plain gated networks learn the task only in part, preflossing 1 to 16 exponents
# changes neither their success nor their accuracy.** The committed run at the defaults above (H = 16, memory bias +1,
# copy d = 13, T = 300, 3001 steps, 9 networks per condition, the same 9 initial networks in every condition; 1264 s;
# `figures/06_fig6_architectures_numbers.json`; 95% Wilson intervals, bootstrap intervals of the mean final accuracy,
# Fisher's exact test and a permutation test against plain training, two-sided, uncorrected):
#
# - **LSTM** (plain: 3/9, 0.12-0.65; accuracy 0.886, 0.863-0.910): k = 1, 2, 4, 8, 16 give 3, 4, 3, 2, 4 of 9 (Fisher
#   p = 1 each) and accuracy 0.888, 0.887, 0.887, 0.879, 0.877 (differences -0.009 to +0.002, p >= 0.63).
# - **GRU** (plain: 8/9, 0.57-0.98; accuracy 0.960, 0.936-0.973): k = 1, 2, 4, 8, 16 give 7, 7, 9, 9, 9 of 9 (p = 1
#   each) and accuracy 0.929, 0.942, 0.957, 0.968, 0.956 (differences -0.030 to +0.009; k = 1: -0.030, p = 0.047, not
#   significant after Holm's correction for the 10 accuracy tests; the others p >= 0.29).
# - **The gates:** the memory gate opens with k, slowly up to k = 8 and to saturation at k = 16 = H: LSTM forget
#   gate 0.73 (before) -> 0.74, 0.76, 0.77, 0.81, 0.97 and mean |c| 0.32 -> 0.40, 0.46, 0.45, 0.59, 13.6; GRU update
#   gate 0.73 -> 0.74, 0.75, 0.79, 0.87, 0.97. Even the saturated networks of k = 16 learn as often as plain ones here.
#
# With 9 networks per condition a difference of 4 of 9 or fewer cannot reach p < 0.05, so effects of that size are
# not excluded; none is visible in the medians either (the bands overlap everywhere). How the delay was chosen: plain
# bias +1 networks at the same settings (one probe run, 9 each) learned d = 12 (LSTM 7/9, GRU 9/9) and not d = 15
# (LSTM 0/9, GRU 1/9); d = 13 is the first delay between them.
#
# Earlier runs of the same notebook (committed beside it) with both initializations (`memory_biases = [0.0, 1.0]`,
# `ks = [0, 2, 16]`):
#
# - **d = 20** (`delays = [20]`, 3191 s in one process; `figures/06_fig6_architectures_d20_numbers.json`,
#   `fig6_architectures_d20.png`): 0/9 successes (Wilson 0-0.30) in all 12 conditions; mean final accuracies 0.71-0.80.
#   k = 2 changed nothing significantly (differences -0.008 to +0.038, p >= 0.095). k = 16 saturated the memory gate
#   (LSTM forget gate 0.50 -> 0.95 and |c| 0.17 -> 11.8 at bias 0; GRU update gate 0.50 -> 0.95) and changed accuracy
#   by -0.050 (LSTM bias +1, p <= 0.0002, the floor of 9999 resamples; the one preflossing effect surviving Holm's
#   correction, a loss), +0.037 (GRU bias 0, p = 0.034), +0.041 (LSTM bias 0, p = 0.11), +0.005 (GRU bias +1,
#   p = 0.40). The forget-gate bias +1 raised the plain LSTM's accuracy by 0.060 (p = 0.0006, also significant after
#   Holm; GRU update gate +1: +0.020, p = 0.73).
# - **d = 10** (`delays = [10]`, 1324 s on the local cluster; `figures/06_fig6_architectures_d10_numbers.json`,
#   `fig6_architectures_d10.png`): every condition learns: LSTM 9, 9, 9 of 9 (bias 0, k = none, 2, 16) and 8, 9, 8
#   (bias +1); GRU 9/9 in all six. Preflossing changed no rate (p = 1) and accuracy by -0.010 to +0.005 (p >= 0.033,
#   none after Holm), with the same gate saturation at k = 16.
#
# So across d = 10 (every condition learns), 13 (LSTMs 3/9, GRUs 8/9) and 20 (none learn), at every k from 1 to 16
# (bias +1) and at k = 2 and 16 with both initializations, preflossing never changed a success rate, and its only
# effect on accuracy significant after Holm's correction is a loss (k = 16, LSTM bias +1, d = 20). The paper's claim
# that preflossing helps gated networks learn is not reproduced at H = 16 and 3001 steps; what our runs leave open are
# larger networks, longer training and other tasks.
