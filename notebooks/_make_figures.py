"""Write the figure notebooks 01..05 (without outputs): `python notebooks/_make_figures.py`.

Edit the notebooks here, not in Jupyter, so the committed notebooks stay clean and reviewable. Each notebook:
a claim, a `parameters` cell (paper-scale defaults), one cached call into floss_core.experiments, plots, record().
"""
from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
HERE = Path(__file__).resolve().parent

IMPORTS = """\
import matplotlib.pyplot as plt
import numpy as np
import torch

from floss_core import experiments, plotting
from floss_core.cache import cached

plotting.setup()"""


def params_cell(src):
    c = code(src)
    c.metadata["tags"] = ["parameters"]
    return c


def write(name, cells):
    for c in cells:  # each notebook records its key numbers under its own name
        c.source = c.source.replace("plotting.record(numbers)", f'plotting.record(numbers, name="{name}")')
    nb = nbf.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, HERE / f"{name}.ipynb")


SWEEP_PARAMS = """\
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
n_hidden = 80  # N
gains = [0.5, 1.0, 2.0]  # starting gains g: stable, marginal, chaotic
ks = [1, 16]  # numbers of exponents flossed, see README for larger k from stable starts
n_networks = 6  # networks per gain
floss_steps = 500  # Adam steps of flossing
gradient = "detached"  # gradient mode: the full gradient does not converge from chaotic starts (see README)
lr = 1e-3  # Adam learning rate
batch = 4  # trajectories per flossing step
seq_len = 100  # flossing trajectory length (steps)
n_transient = 30  # of which not averaged
spectrum_k = 32  # exponents measured before/after
spectrum_steps = 2000  # steps of the trajectories measuring the spectra
horizon = 300  # longest lag tau of the gradient profile and the long-term Jacobian"""

SWEEP_CALL = """\
params = dict(n_hidden=n_hidden, gains=gains, ks=ks, n_networks=n_networks, floss_steps=floss_steps,
              gradient=gradient, lr=lr, batch=batch, seq_len=seq_len, n_transient=n_transient,
              spectrum_k=spectrum_k, spectrum_steps=spectrum_steps, horizon=horizon, seed=seed, device=device)
res = cached("flossing_sweep", params, lambda: experiments.flossing_sweep(**params, progress=not quick))
gain_of = res["gains"].numpy()
by_k = {key: dict(zip(ks, res[key])) for key in ["floss_exponents", "spectrum_after", "profile_after", "log_sv_after"]}"""

write("01_fig1_flossing", [
    md("""\
# Figure 1: flossing drives the Lyapunov exponents to zero and flattens the gradient

**Claim.** Gradient flossing moves the first k Lyapunov exponents to 0, from stable (g < 1) and from chaotic
(g > 1) starting points, and only those k: the rest of the spectrum stays negative. With the top exponent at 0, the
norm of the gradient of a late loss with respect to a state tau steps earlier neither grows nor decays exponentially
with tau.

**What to look for.** (a) lambda_1 during flossing converges to 0 from above (g = 2) and from below (g = 0.5);
(b) after flossing k exponents from g = 2, exactly the first k sit at 0; (c) the gradient-norm profile, exponential
in tau before flossing, is flat after flossing lambda_1.

**Limits we found.** With zero input and the state-detached gradient, flossing k = 16 or more exponents from the
stable starts (g = 0.5, 1) diverges at lr = 1e-3 (the numbers cell reports it); from g = 2 it converges. See README.

**Runtime.** About 4 minutes on 2 CPU cores at the defaults (cached: re-plotting is instant). The trajectory is
driven by zero input; flossing uses the state-detached gradient (the full gradient through a chaotic trajectory is
dominated by the trajectory's own sensitivity and does not converge from g = 2; see the README)."""),
    code(IMPORTS),
    params_cell(SWEEP_PARAMS),
    code(SWEEP_CALL),
    md("## (a) lambda_1 during flossing, (b) spectra before and after, (c) gradient-norm profiles"),
    code("""\
k_a = ks[0]  # the k whose flossing dynamics panel (a) shows
g_b = max(gains)  # the gain whose spectra panel (b) shows
k_c = ks[0]  # the k whose profiles panel (c) shows
colors = dict(zip(gains, plt.cm.viridis(np.linspace(0.1, 0.85, len(gains)))))
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))

ax = axes[0]
lam1 = by_k["floss_exponents"][k_a][:, :, 0].numpy()  # (steps, E)
window = max(1, min(20, lam1.shape[0] // 5))
smooth = np.stack([np.convolve(lam1[:, e], np.ones(window) / window, mode="valid") for e in range(lam1.shape[1])])
for g in gains:
    plotting.median_band(ax, np.arange(smooth.shape[1]) + window, smooth[gain_of == g], label=f"g = {g}",
                         color=colors[g])
ax.axhline(0, color="k", lw=0.8)
ax.set(xlabel="flossing step", ylabel=r"$\\lambda_1$ (running mean, %d steps)" % window,
       title=f"(a) flossing k = {k_a}")
ax.legend()

ax = axes[1]
sel = gain_of == g_b
i = np.arange(1, spectrum_k + 1)
plotting.median_band(ax, i, res["spectrum_before"][sel].numpy(), label="before", color="gray")
for k, c in zip(ks, plt.cm.plasma(np.linspace(0.1, 0.8, len(ks)))):
    plotting.median_band(ax, i, by_k["spectrum_after"][k][sel].numpy(), label=f"after, k = {k}", color=c)
    ax.axvline(k, color=c, lw=0.6, ls=":")
ax.axhline(0, color="k", lw=0.8)
ax.set(xlabel="index i", ylabel=r"$\\lambda_i$ (1/step)", title=f"(b) spectra, g = {g_b}")
ax.legend()

ax = axes[2]
tau = np.arange(horizon + 1)
for g in gains:
    sel = gain_of == g
    plotting.median_band(ax, tau, res["profile_before"][sel].numpy(), color=colors[g], label=f"g = {g}, before")
    plotting.median_band(ax, tau, by_k["profile_after"][k_c][sel].numpy(), color=colors[g], label=f"after (k = {k_c})")
    ax.lines[-1].set_linestyle("--")
ax.set_yscale("log")
ax.set(xlabel=r"lag $\\tau$", ylabel=r"$\\|\\partial L_t / \\partial h_{t-\\tau}\\|$", title="(c) gradient norm vs lag")
ax.legend(fontsize=7, ncol=2)
plotting.caption(fig, dict(N=n_hidden, networks_per_gain=n_networks, floss_steps=floss_steps, gradient=gradient,
                           lr=lr, batch=batch, T=seq_len, transient=n_transient, input="zero",
                           bands="median and quartiles over networks"))
plotting.save(fig, "fig1_flossing")"""),
    code("""\
def spread(p):  # decades between the largest and smallest gradient norm over tau, per network
    return np.log10(p.max(1).values / p.min(1).values).numpy()

numbers = {}
for g in gains:
    sel = gain_of == g
    numbers[f"lambda1_before_g{g}"] = float(res["spectrum_before"][sel, 0].median())
    for k in ks:
        after = by_k["spectrum_after"][k][sel]
        numbers[f"max_abs_flossed_g{g}_k{k}"] = float(after[:, :k].abs().max(1).values.median())
        if k < spectrum_k:
            numbers[f"lambda_k+1_g{g}_k{k}"] = float(after[:, k].median())
    numbers[f"profile_decades_before_g{g}"] = float(np.median(spread(res["profile_before"][sel])))
    numbers[f"profile_decades_after_g{g}_k{k_c}"] = float(np.median(spread(by_k["profile_after"][k_c][sel])))
plotting.record(numbers)"""),
])

write("02_fig2_condition_number", [
    md("""\
# Figure 2: flossing controls the condition number of the long-term Jacobian

**Claim.** The singular values of the long-term Jacobian J_t ... J_1 grow or shrink like exp(lambda_i t), so its
condition number kappa_k = sigma_1 / sigma_k grows like exp((lambda_1 - lambda_k) t). Flossing k exponents to 0 keeps
sigma_1 ... sigma_k together: kappa_k stays bounded, so errors can be propagated back along k directions at once.

**What to look for.** (a) the log singular values over t fan out before flossing and the first k stay flat after;
(b) log kappa_k grows linearly before flossing, along the dashed line (lambda_1 - lambda_k) t, and is flat after
flossing k exponents.

**Runtime.** Shares the computation of figure 1 (same parameters, same cache entry): seconds if figure 1 ran.
The singular values are computed in log space (graded QR products and a one-sided Jacobi SVD), never by multiplying
Jacobians."""),
    code(IMPORTS),
    params_cell(SWEEP_PARAMS),
    code(SWEEP_CALL),
    code("""\
g_show = max(gains)  # the (chaotic) gain shown
sel = gain_of == g_show
t = res["sv_times"].numpy()
k_big = max(ks)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))

ax = axes[0]
for i, c in zip([0, k_big // 2, k_big - 1, spectrum_k - 1], plt.cm.plasma(np.linspace(0.1, 0.8, 4))):
    plotting.median_band(ax, t, res["log_sv_before"][sel][:, :, i].numpy(), color=c, label=f"i = {i + 1}, before")
    plotting.median_band(ax, t, by_k["log_sv_after"][k_big][sel][:, :, i].numpy(), color=c, label="after")
    ax.lines[-1].set_linestyle("--")
ax.set(xlabel="t (steps)", ylabel=r"$\\log \\sigma_i(J_t \\cdots J_1)$", title=f"(a) singular values, k = {k_big} flossed")
ax.legend(fontsize=7, ncol=2)

ax = axes[1]
for k, c in zip([k for k in ks if k > 1], plt.cm.viridis(np.linspace(0.1, 0.8, len(ks)))):
    before = (res["log_sv_before"][sel][:, :, 0] - res["log_sv_before"][sel][:, :, k - 1]).numpy()
    after = (by_k["log_sv_after"][k][sel][:, :, 0] - by_k["log_sv_after"][k][sel][:, :, k - 1]).numpy()
    plotting.median_band(ax, t, before, color=c, label=f"k = {k}, before")
    plotting.median_band(ax, t, after, color=c, label=f"k = {k}, after flossing k")
    ax.lines[-1].set_linestyle("--")
    slope = float((res["spectrum_before"][sel][:, 0] - res["spectrum_before"][sel][:, k - 1]).median())
    ax.plot(t, slope * t, color=c, ls=":", lw=1.5, label=r"$(\\lambda_1 - \\lambda_k)\\, t$")
ax.set(xlabel="t (steps)", ylabel=r"$\\log \\kappa_k = \\log \\sigma_1 / \\sigma_k$", title=f"(b) condition number, g = {g_show}")
ax.legend(fontsize=7)
plotting.caption(fig, dict(N=n_hidden, g=g_show, networks=int(sel.sum()), floss_steps=floss_steps, gradient=gradient,
                           input="zero", bands="median and quartiles over networks"))
plotting.save(fig, "fig2_condition_number")"""),
    code("""\
numbers = {}
for k in [k for k in ks if k > 1]:
    before = res["log_sv_before"][sel][:, -1, 0] - res["log_sv_before"][sel][:, -1, k - 1]
    after = by_k["log_sv_after"][k][sel][:, -1, 0] - by_k["log_sv_after"][k][sel][:, -1, k - 1]
    numbers[f"log_kappa_T_before_k{k}"] = float(before.median())
    numbers[f"log_kappa_T_after_k{k}"] = float(after.median())
    numbers[f"predicted_log_kappa_T_k{k}"] = float(
        (res["spectrum_before"][sel][:, 0] - res["spectrum_before"][sel][:, k - 1]).median() * t[-1])
plotting.record(numbers)"""),
])

DELAY_PARAMS = """\
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
tasks = ["copy", "xor"]  # delayed copy and delayed XOR (see floss_core.tasks)
delays = {DELAYS}  # d, the longest lag (the author's XOR "delay" is d/2)
n_networks = {NETS}  # networks (seeds) per delay and condition
n_hidden = 80  # N
gain = 1.0  # initial g
train_steps = {STEPS}  # training steps (Adam, fresh batch each)
batch = 16
seq_len = {SEQ}  # T
floss_k = {K}  # exponents flossed
pre_steps = {PRE}  # E_p, flossing steps before training
every = 100  # E_f
episode_steps = {EPI}  # E_i
max_episodes = 2  # N_i
threshold = 0.9  # success: running-mean accuracy stays above this until the end"""

DELAY_CALL = """\
params = dict(tasks=tasks, delays=delays, n_networks=n_networks, n_hidden=n_hidden, gain=gain,
              train_steps=train_steps, batch=batch, seq_len=seq_len, floss_k=floss_k, pre_steps=pre_steps,
              every=every, episode_steps=episode_steps, max_episodes=max_episodes, seed=seed, device=device)
res = cached("delay_sweep", params, lambda: experiments.delay_sweep(**params, progress=not quick))
summary = {task: experiments.summarize_delay_sweep(res, task, threshold=threshold, compare=COMPARE) for task in tasks}"""


def delay_notebook(name, title, claim, look, plot, numbers, runtime, fmt):
    write(name, [
        md(f"# {title}\n\n**Claim.** {claim}\n\n**What to look for.** {look}\n\n**Runtime.** {runtime}"),
        code(IMPORTS),
        params_cell(DELAY_PARAMS.format(**fmt)),
        code(DELAY_CALL.replace("COMPARE", fmt["COMPARE"])),
        code(plot),
        code(numbers),
    ])


FMT = dict(DELAYS="[10, 20, 30, 40, 60, 90]", NETS=5, STEPS=1500, SEQ=150, K=75, PRE=500, EPI=100,
           COMPARE='["none", "pre"]')
delay_notebook(
    "03_fig3_preflossing", "Figure 3: flossing before training improves success and speed at long delays",
    "Flossing the exponents to zero before training (preflossing) makes networks learn delayed copy and delayed XOR "
    "tasks at delays where plain training fails, and reach the criterion in fewer steps.",
    "(a, b) test accuracy during training at a long delay, with and without preflossing; (c) success rate vs delay "
    "(with counts): both succeed at short delays, preflossing keeps succeeding longer, both fail at the longest; "
    "(d) steps to criterion of the successful networks vs delay.",
    """\
cond_color = {"none": "tab:gray", "pre": "tab:blue", "pre+during": "tab:red"}
shown = ["none", "pre"]
fig, axes = plt.subplots(1, 4, figsize=(19, 4.3))
for ax, task in zip(axes[:2], tasks):
    s = summary[task]
    d_idx = s["hardest_informative_delay_index"]
    for c in shown:
        acc = s["smoothed_accuracy"][c][:, d_idx].numpy()  # (steps, S)
        plotting.median_band(ax, np.arange(acc.shape[0]), acc.T, color=cond_color[c], label=c)
    ax.set(xlabel="training step", ylabel="test accuracy (running mean)", ylim=(0.4, 1.02),
           title=f"({'ab'[tasks.index(task)]}) {task}, d = {delays[d_idx]}")
    ax.legend()
ax = axes[2]
for task, ls in zip(tasks, ["-", "--"]):
    s = summary[task]
    for c in shown:
        rate = s["success"][c].float().mean(1).numpy()
        ax.plot(delays, rate, ls, marker="o", color=cond_color[c], label=f"{task}, {c}")
        for d, r, n in zip(delays, rate, s["success"][c].sum(1).tolist()):
            ax.annotate(f"{n}/{n_networks}", (d, r), fontsize=6, textcoords="offset points", xytext=(2, 3))
ax.set(xlabel="delay d", ylabel="success rate", ylim=(-0.05, 1.1), title="(c) success vs delay")
ax.legend(fontsize=7)
ax = axes[3]
for task, ls in zip(tasks, ["-", "--"]):
    s = summary[task]
    for c in shown:
        steps = s["steps_to_criterion"][c].float()
        steps[steps < 0] = float("nan")
        med = np.nanmedian(steps.numpy(), axis=1) if steps.numel() else []
        ax.plot(delays, med, ls, marker="o", color=cond_color[c], label=f"{task}, {c}")
ax.set(xlabel="delay d", ylabel="steps to criterion (median of successes)", title="(d) learning speed")
ax.legend(fontsize=7)
plotting.caption(fig, dict(N=n_hidden, g=gain, networks=n_networks, steps=train_steps, batch=batch, T=seq_len,
                           k=floss_k, E_p=pre_steps, criterion=threshold, bands="median and quartiles"))
plotting.save(fig, "fig3_preflossing")""",
    """\
numbers = {}
for task in tasks:
    for c in ["none", "pre"]:
        for d, n in zip(delays, summary[task]["success"][c].sum(1).tolist()):
            numbers[f"{task}_{c}_d{d}_successes"] = n
plotting.record(numbers)""",
    "About 15 minutes on 2 CPU cores at the defaults (shared with figure 4: the same cached sweep holds all three "
    "conditions).", FMT)

delay_notebook(
    "04_fig4_during", "Figure 4: flossing during training bridges longer delays",
    "At the hardest delays, flossing before *and during* training (episodes of flossing every E_f training steps) "
    "succeeds more often than preflossing only, which succeeds more often than no flossing. Without flossing, the "
    "exponents drift during training.",
    "(a) final accuracy vs delay for the three conditions; (b) lambda_1 over training: plain training moves away "
    "from zero, flossing episodes pull it back.",
    """\
cond_color = {"none": "tab:gray", "pre": "tab:blue", "pre+during": "tab:red"}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
for ax, task in zip(axes[:2], tasks):
    s = summary[task]
    for c in res["conditions"]:
        plotting.median_band(ax, np.array(delays), s["final_accuracy"][c].numpy().T, color=cond_color[c], label=c)
        ax.lines[-1].set_marker("o")
    ax.set(xlabel="delay d", ylabel="final accuracy (last 100 steps)", ylim=(0.4, 1.02),
           title=f"({'ab'[tasks.index(task)]}) {task}")
    ax.legend()
ax = axes[2]
task = tasks[-1]
d_idx = summary[task]["hardest_informative_delay_index"]
for c in res["conditions"]:
    lam1 = res[c]["exponents"][:, tasks.index(task), d_idx, :, 0].numpy()  # (records, S)
    plotting.median_band(ax, np.array(res[c]["exponent_steps"]), lam1.T, color=cond_color[c], label=c)
ax.axhline(0, color="k", lw=0.8)
ax.set(xlabel="training step", ylabel=r"$\\lambda_1$", title=f"(c) {task}, d = {delays[d_idx]}: top exponent")
ax.legend()
plotting.caption(fig, dict(N=n_hidden, g=gain, networks=n_networks, steps=train_steps, T=seq_len, k=floss_k,
                           E_p=pre_steps, E_f=every, E_i=episode_steps, N_i=max_episodes,
                           bands="median and quartiles"))
plotting.save(fig, "fig4_during")""",
    """\
numbers = {}
for task in tasks:
    for c in res["conditions"]:
        for d, n in zip(delays, summary[task]["success"][c].sum(1).tolist()):
            numbers[f"{task}_{c}_d{d}_successes"] = n
plotting.record(numbers)""",
    "Shares the sweep of figure 3 (same parameters, same cache entry): seconds if figure 3 ran.",
    dict(FMT, COMPARE="None"))

write("05_fig5_complexity", [
    md("""\
# Figure 5: tasks of higher dimension need more flossed exponents

**Claim.** A task that requires carrying C independent bits over a delay needs error signals along C directions at
once, so flossing more exponents (k) helps more as C grows: the accuracy reached after training rises with k, and
the k needed grows with the task dimension.

**What to look for.** Final accuracy vs k (log axis), one curve per number of channels C: for C = 1 a few exponents
suffice; for larger C the curve rises later.

**Runtime.** About 10 minutes on 2 CPU cores at the defaults."""),
    code(IMPORTS),
    params_cell("""\
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
task = "copy"  # every channel carries its own delayed-copy task
channels = [1, 2, 4]  # C, the task dimension
ks = [0, 1, 4, 16, 64]  # exponents flossed before training (0: none)
delay = 15  # d
n_networks = 5
n_hidden = 80
gain = 1.0
train_steps = 1500
batch = 16
seq_len = 100
pre_steps = 500"""),
    code("""\
params = dict(task=task, channels=channels, ks=ks, delay=delay, n_networks=n_networks, n_hidden=n_hidden, gain=gain,
              train_steps=train_steps, batch=batch, seq_len=seq_len, pre_steps=pre_steps, seed=seed, device=device)
res = cached("complexity_sweep", params, lambda: experiments.complexity_sweep(**params, progress=not quick))
final = {C: experiments.final_accuracy(acc) for C, acc in zip(channels, res["accuracy"])}  # (len(ks), S) each"""),
    code("""\
fig, ax = plt.subplots(figsize=(6, 4.3))
x = np.array([max(k, 0.5) for k in ks])  # k = 0 drawn at 0.5 on the log axis
for C, c in zip(channels, plt.cm.viridis(np.linspace(0.1, 0.85, len(channels)))):
    plotting.median_band(ax, x, final[C].numpy().T, color=c, label=f"C = {C} channel(s)")
    ax.lines[-1].set_marker("o")
ax.set_xscale("log")
ax.set_xticks(x, [str(k) for k in ks])
ax.set(xlabel="k, exponents flossed before training", ylabel="final accuracy (last 100 steps)", ylim=(0.4, 1.02),
       title=f"{task}, d = {delay}")
ax.legend()
plotting.caption(fig, dict(N=n_hidden, g=gain, networks=n_networks, steps=train_steps, T=seq_len, E_p=pre_steps,
                           bands="median and quartiles over networks"))
plotting.save(fig, "fig5_complexity")"""),
    code("""\
numbers = {f"final_acc_C{C}_k{k}": float(final[C][j].median()) for C in channels for j, k in enumerate(ks)}
plotting.record(numbers)"""),
])

write("06_fig6_architectures", [
    md("""\
# Figure 6: flossing before training helps other architectures too (LSTM, GRU)

**Claim.** Gradient flossing is not specific to the vanilla RNN: the Lyapunov exponents of gated networks (LSTM with
state (h, c), GRU) are computed and flossed the same way (analytic Jacobians, QR, backpropagation through the
spectrum), and preflossing changes how they learn delayed tasks.

**What to look for.** Success rate vs delay for LSTM and GRU, with and without preflossing, on delayed XOR and
delayed copy; the top exponent before and after preflossing.

**Runtime.** About 10 minutes on one CPU core at the defaults (smaller networks than figures 3-4: N = 32 hidden
units, k = 32 exponents, 1500 training steps, T = 100)."""),
    code(IMPORTS),
    params_cell("""\
quick = False  # smoke-test mode (sizes come from quick_params.yaml)
device = "cpu"  # "cpu" or "cuda"
seed = 0
cells = ["lstm", "gru"]  # architectures
tasks = ["xor", "copy"]
delays = [4, 10, 20, 40]  # d, the longest lag (even: XOR needs d/2)
n_networks = 4  # networks (seeds) per delay and condition
n_hidden = 32  # hidden units H (state size 2H for the LSTM)
train_steps = 1500
batch = 16
seq_len = 100
floss_k = 32  # exponents flossed
pre_steps = 500  # flossing steps before training
threshold = 0.9  # success: running-mean accuracy stays above this until the end"""),
    code("""\
res, summary = {}, {}
for cell in cells:
    params = dict(cell=cell, tasks=tasks, delays=delays, conditions=["none", "pre"], n_networks=n_networks,
                  n_hidden=n_hidden, train_steps=train_steps, batch=batch, seq_len=seq_len, floss_k=floss_k,
                  pre_steps=pre_steps, record_k=2, seed=seed, device=device)
    res[cell] = cached("delay_sweep", params, lambda: experiments.delay_sweep(**params, progress=not quick))
    summary[cell] = {t: experiments.summarize_delay_sweep(res[cell], t, threshold=threshold) for t in tasks}"""),
    code("""\
cond_color = {"none": "tab:gray", "pre": "tab:blue"}
fig, axes = plt.subplots(1, len(cells) + 1, figsize=(5 * (len(cells) + 1), 4.3))
for ax, cell in zip(axes, cells):
    for task, ls in zip(tasks, ["-", "--"]):
        for c in ["none", "pre"]:
            ok = summary[cell][task]["success"][c]
            ax.plot(delays, ok.float().mean(1).numpy(), ls, marker="o", color=cond_color[c], label=f"{task}, {c}")
            for d, r, n in zip(delays, ok.float().mean(1).tolist(), ok.sum(1).tolist()):
                ax.annotate(f"{n}/{n_networks}", (d, r), fontsize=6, textcoords="offset points", xytext=(2, 3))
    ax.set(xlabel="delay d", ylabel="success rate", ylim=(-0.05, 1.1), title=f"{cell.upper()}")
    ax.legend(fontsize=7)
ax = axes[-1]
for cell, ls in zip(cells, ["-", "--"]):
    for c in ["none", "pre"]:
        lam1 = res[cell][c]["exponents"][0, 0, 0, :, 0].numpy()  # lambda_1 at the start of training, (S,)
        ax.plot([cells.index(cell) + 0.15 * (c == "pre")] * len(lam1), lam1, "o", color=cond_color[c], alpha=0.7,
                label=f"{c}" if cell == cells[0] else None)
ax.axhline(0, color="k", lw=0.8)
ax.set_xticks(range(len(cells)), [c.upper() for c in cells])
ax.set(ylabel=r"$\\lambda_1$ at the start of training", title="top exponent before / after preflossing")
ax.legend()
plotting.caption(fig, dict(H=n_hidden, networks=n_networks, steps=train_steps, batch=batch, T=seq_len, k=floss_k,
                           E_p=pre_steps, criterion=threshold))
plotting.save(fig, "fig6_architectures")"""),
    code("""\
numbers = {}
for cell in cells:
    for task in tasks:
        for c in ["none", "pre"]:
            for d, n in zip(delays, summary[cell][task]["success"][c].sum(1).tolist()):
                numbers[f"{cell}_{task}_{c}_d{d}_successes"] = n
plotting.record(numbers)"""),
])
