"""Small plotting helpers shared by the figure notebooks (one look, one place figures go).

    setup()                      headless backend, seaborn style, consistent font sizes
    CONDITION_COLORS, LINESTYLES one color per flossing condition, one line style per task (or cell)
    colors(keys)                 {key: color} along a colormap, e.g. one per gain or per k
    median_band(ax, x, y)        median over networks and a shaded inter-quartile band (line keywords forwarded)
    success_vs_delay(ax, ...)    success rate vs delay with "n/S" counts at every point
    steps_vs_delay(ax, ...)      median steps to criterion of the networks that reached it, vs delay
    caption(fig, text)           the parameters as a small caption under the figure
    save(fig, name)              <fig dir>/<name>.png (dpi 150) and .pdf
    success_counts(...)          {"<prefix>_d<d>_successes": n} for record()
    median_decades(profile)      median over networks of the decades a gradient-norm profile spans
    record(numbers)              <fig dir>/<notebook>_numbers.json: the key numbers of a notebook

The figure directory is ``out_dir`` if given, else ``$FLOSS_FIG_DIR``, else ``figures/`` under the working
directory. ``run_all.sh``
points ``$FLOSS_FIG_DIR`` at a temporary directory per notebook and moves the files into place only when the
notebook succeeded, and at ``figures_quick/`` in quick mode.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np

from ..diagnostics.statistics import success_rate

__all__ = ["setup", "fig_dir", "save", "median_band", "caption", "record", "CONDITION_COLORS", "LINESTYLES", "colors",
           "success_vs_delay", "steps_vs_delay", "success_counts", "median_decades"]

DPI = 150
CONDITION_COLORS = {"none": "tab:gray", "pre": "tab:blue", "pre+during": "tab:red"}  # flossing conditions
LINESTYLES = ("-", "--", ":", "-.")  # one per task (or cell) drawn in the same panel


def _kernel_shell():
    """The IPython shell of a Jupyter kernel we run in, else None."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and "IPKernelApp" in shell.config else None


def setup() -> None:
    """Headless plotting with one style for every figure.

    In a Jupyter kernel the inline backend is used (it renders with Agg, so no display is needed, and executed
    notebooks keep their images); elsewhere Agg. Seaborn "ticks" style, "paper" context, small fonts.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    shell = _kernel_shell()
    if shell is not None:
        try:  # what `%matplotlib inline` does: figures are shown (and stored in the notebook) after each cell
            shell.run_line_magic("matplotlib", "inline")
        except Exception:  # noqa: BLE001 - no inline backend: figures are only saved
            plt.switch_backend("Agg")
    else:
        plt.switch_backend("Agg")
    sns.set_theme(context="paper", style="ticks", palette="colorblind")
    matplotlib.rcParams.update({
        "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "legend.fontsize": 7, "legend.frameon": False, "figure.dpi": 100, "savefig.dpi": DPI,
        "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.2, "pdf.fonttype": 42,
    })


def fig_dir(out_dir=None) -> Path:
    """``out_dir``, else ``$FLOSS_FIG_DIR``, else ``./figures`` (created)."""
    path = Path(out_dir) if out_dir is not None else Path(os.environ.get("FLOSS_FIG_DIR") or Path.cwd() / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, name: str, *, out_dir=None) -> list[Path]:
    """Save ``fig`` as ``<dir>/<name>.png`` (dpi 150) and ``<dir>/<name>.pdf``; returns the two paths."""
    if not isinstance(name, str) or not name or "/" in name or name.endswith((".png", ".pdf")):
        raise ValueError(f"name must be a file name without directory or extension, got {name!r}")
    root = fig_dir(out_dir)
    paths = [root / f"{name}.png", root / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None})
    return paths


def _numpy(y) -> np.ndarray:
    if hasattr(y, "detach"):  # a torch tensor
        y = y.detach().cpu().double().numpy()
    return np.asarray(y, dtype=float)


def colors(keys, cmap: str = "viridis", *, lo: float = 0.1, hi: float = 0.85) -> dict:
    """{key: RGBA color} evenly spaced on ``cmap`` between ``lo`` and ``hi``, in the order of ``keys``."""
    import matplotlib.pyplot as plt

    keys = list(keys)
    return dict(zip(keys, plt.get_cmap(cmap)(np.linspace(lo, hi, len(keys)))))


def median_band(ax, x, y, *, axis: int = 0, label=None, color=None, q=(0.25, 0.75), alpha: float = 0.25,
                **line_kw):
    """Plot the median of ``y`` over networks as a line and the quantiles ``q`` as a shaded band.

    x: the horizontal positions, length L. y: tensor or array whose ``axis`` runs over networks (or seeds) and
    whose remaining dimension has length L, e.g. (E, L) with the default axis=0, or (L, E) with axis=1.
    NaNs (failed networks) are ignored. Other keywords (linestyle, marker, ...) go to the median line's
    ``ax.plot``. Returns the median line.
    """
    x, y = _numpy(x), _numpy(y)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (networks along axis={axis}), got shape {y.shape}")
    y = np.moveaxis(y, axis, 0)  # (E, L)
    if y.shape[1] != len(x):
        raise ValueError(f"y has {y.shape[1]} points per network but x has {len(x)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, drawn as gaps
        med = np.nanmedian(y, axis=0)
        lo, hi = np.nanquantile(y, q[0], axis=0), np.nanquantile(y, q[1], axis=0)
    (line,) = ax.plot(x, med, label=label, color=color, **line_kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def _per_delay(name: str, delays, values) -> tuple[np.ndarray, np.ndarray]:
    """delays (D,) and values (D, S) as arrays, checked against each other."""
    delays, values = _numpy(delays), _numpy(values)
    if values.ndim != 2 or values.shape[0] != len(delays) or values.shape[1] < 1:
        raise ValueError(f"{name} must be (delays, networks) = ({len(delays)}, S), got shape {values.shape}")
    return delays, values


def success_vs_delay(ax, delays, success, *, label=None, color=None, n_networks: int | None = None, **line_kw):
    """Plot the success rate per delay, shade its 95% Wilson interval and annotate every point with its count "n/S".

    delays: (D,). success: (D, S) bool, e.g. ``summarize_delay_sweep(...)["success"][condition]``.
    n_networks: S, checked against ``success`` (default: its second dimension). Other keywords (linestyle,
    marker: "o" by default, ...) go to ``ax.plot``. Labels the axes (delay d, success rate) and sets the y range.
    Returns the line.
    """
    delays, ok = _per_delay("success", delays, success)
    S = ok.shape[1]
    if n_networks is not None and n_networks != S:
        raise ValueError(f"success has {S} networks per delay, but n_networks={n_networks}")
    rate, counts = ok.mean(1), ok.sum(1).astype(int)
    line_kw.setdefault("marker", "o")
    (line,) = ax.plot(delays, rate, label=label, color=color, **line_kw)
    ci = [success_rate(int(n), S) for n in counts]  # 95% Wilson intervals, shaded
    ax.fill_between(delays, [c["low"] for c in ci], [c["high"] for c in ci], color=line.get_color(), alpha=0.12,
                    linewidth=0)
    for d, r, n in zip(delays, rate, counts):
        ax.annotate(f"{n}/{S}", (d, r), fontsize=6, textcoords="offset points", xytext=(2, 3),
                    color=line.get_color())
    ax.set(xlabel="delay d", ylabel="success rate", ylim=(-0.05, 1.1))
    return line


def steps_vs_delay(ax, delays, steps, *, label=None, color=None, **line_kw):
    """Plot, per delay, the median steps to criterion over the networks that reached it (a gap where none did).

    delays: (D,). steps: (D, S), -1 for a network that never reached the criterion, e.g.
    ``summarize_delay_sweep(...)["steps_to_criterion"][condition]``. Other keywords go to ``ax.plot`` (marker "o"
    by default). Returns the line.
    """
    delays, steps = _per_delay("steps", delays, steps)
    steps = np.where(steps >= 0, steps, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a delay without successes: NaN, a gap
        med = np.nanmedian(steps, axis=1)
    line_kw.setdefault("marker", "o")
    (line,) = ax.plot(delays, med, label=label, color=color, **line_kw)
    return line


def caption(fig, text) -> None:
    """Write ``text`` (a string, or a dict of parameters shown as ``k=v, ...``) in small type under the figure."""
    if isinstance(text, dict):
        text = ", ".join(f"{k}={v}" for k, v in text.items())
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize=6, color="0.35", wrap=True,
             transform=fig.transFigure)


def success_counts(prefix: str, delays, success) -> dict:
    """{"<prefix>_d<d>_successes": number of successful networks at delay d} for ``record``.

    delays: (D,) ints. success: (D, S) bool (a tensor or an array)."""
    delays, ok = _per_delay("success", delays, success)
    return {f"{prefix}_d{int(d)}_successes": int(n) for d, n in zip(delays, ok.sum(1))}


def median_decades(profile, *, axis: int = 1) -> float:
    """The median over networks of the decades a gradient-norm profile spans, ``log10(max / min)`` over the lags.

    profile: (E, L) with lags along ``axis`` (e.g. ``gradient_norm_profile``'s output); positive and finite.
    0 means a flat profile; an exponentially growing or decaying one spans about ``|lambda_1| L / ln 10`` decades."""
    p = _numpy(profile)
    if p.ndim != 2:
        raise ValueError(f"profile must be 2-D (networks, lags), got shape {p.shape}")
    return float(np.median(np.log10(p.max(axis) / p.min(axis))))


def _number(value, where: str):
    if hasattr(value, "detach"):  # a torch tensor
        if value.numel() != 1:
            raise TypeError(f"{where} is a tensor with {value.numel()} elements; record scalars or lists")
        value = value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a number, got {type(value).__name__}")
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if not math.isfinite(value):
        warnings.warn(f"recorded number {where} = {value} is not finite", RuntimeWarning, stacklevel=3)
    return value


def _notebook_name() -> str:
    name = os.environ.get("FLOSS_NOTEBOOK")
    if name:
        return name
    try:  # JupyterLab puts the notebook path in the kernel's namespace as __session__
        from IPython import get_ipython

        session = (get_ipython().user_ns or {}).get("__session__")
        if session:
            return Path(session).stem
    except Exception:  # noqa: BLE001 - not in IPython
        pass
    return "notebook"


def record(numbers_: dict, *, name: str | None = None, out_dir=None) -> Path:
    """Write the key numbers of a notebook to ``<fig dir>/<name>_numbers.json`` and print them.

    numbers_: {label: number or list of numbers}; tensors with one element and numpy scalars are converted.
    name: default ``$FLOSS_NOTEBOOK`` (set by run_all.sh and the tests to the notebook's stem), else the notebook
    file's stem when JupyterLab tells the kernel, else "notebook". Non-finite values are written (as NaN/Infinity)
    with a warning; the notebook tests fail on them.
    """
    if not isinstance(numbers_, dict) or not numbers_:
        raise ValueError("record needs a non-empty dict {label: number}")
    out = {}
    for key, value in numbers_.items():
        if not isinstance(key, str):
            raise TypeError(f"labels must be strings, got {key!r}")
        if isinstance(value, (list, tuple)) or (hasattr(value, "detach") and value.numel() > 1):
            value = value.tolist() if hasattr(value, "tolist") else value
            out[key] = [_number(v, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _number(value, key)
    path = fig_dir(out_dir) / f"{name or _notebook_name()}_numbers.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    width = max(map(len, out))
    for key, value in out.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return path
