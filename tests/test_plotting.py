"""floss_core.repro.plotting, which every notebook uses: saving, recording numbers, and the shared figure helpers."""
import json

import matplotlib
import numpy as np
import pytest
import torch

from floss_core.repro import plotting

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_plotting_save_record_and_median_band(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOSS_FIG_DIR", str(tmp_path / "env_dir"))
    monkeypatch.setenv("FLOSS_NOTEBOOK", "07_demo")
    plotting.setup()
    assert matplotlib.get_backend().lower() == "agg"

    fig, ax = plt.subplots()
    y = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, float("nan")], [2.0, 3.0, 5.0]])  # (E, L), a failed network
    line = plotting.median_band(ax, [0, 1, 2], y)
    assert np.allclose(line.get_ydata(), [2.0, 3.0, 4.0])  # NaN ignored
    line = plotting.median_band(ax, [0, 1, 2], y.T, axis=1)
    assert np.allclose(line.get_ydata(), [2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="points per network"):
        plotting.median_band(ax, [0, 1], y)
    plotting.caption(fig, {"seed": 0, "k": 16})
    paths = plotting.save(fig, "demo")
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"] and all(p.stat().st_size > 0 for p in paths)
    assert paths[0].parent == tmp_path / "env_dir"
    assert plotting.save(fig, "demo", out_dir=tmp_path / "explicit")[0].parent == tmp_path / "explicit"
    plt.close(fig)

    path = plotting.record({"a": torch.tensor(0.5), "b": np.float32(2.0), "c": 3, "d": [1.0, torch.tensor(2)]})
    assert path == tmp_path / "env_dir" / "07_demo_numbers.json"
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 2.0, "c": 3, "d": [1.0, 2]}
    with pytest.warns(RuntimeWarning, match="not finite"):
        plotting.record({"bad": float("nan")}, name="nan_case")
    with pytest.raises(TypeError):
        plotting.record({"text": "not a number"})
    with pytest.raises(ValueError):
        plotting.record({})


def test_median_band_forwards_line_keywords(ax):
    y = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    line = plotting.median_band(ax, [0, 1], y, color="tab:red", label="r", linestyle="--", marker="o", lw=2)
    assert line is ax.lines[-1] and line.get_label() == "r"
    assert line.get_linestyle() == "--" and line.get_marker() == "o" and line.get_linewidth() == 2
    assert np.allclose(line.get_ydata(), [2.0, 3.0])
    band = ax.collections[-1]  # the inter-quartile band takes the line's color
    assert np.allclose(band.get_facecolor()[0][:3], matplotlib.colors.to_rgb("tab:red"))


def test_condition_colors_linestyles_and_colors():
    from floss_core.experiments import CONDITIONS

    assert set(plotting.CONDITION_COLORS) == set(CONDITIONS)
    assert len(set(plotting.CONDITION_COLORS.values())) == len(CONDITIONS)
    assert len(set(plotting.LINESTYLES)) == len(plotting.LINESTYLES) >= 2
    c = plotting.colors([0.5, 1.0, 2.0])
    assert list(c) == [0.5, 1.0, 2.0] and len({tuple(v) for v in c.values()}) == 3
    assert plotting.colors([]) == {}


def test_success_vs_delay_draws_rates_and_counts(ax):
    success = torch.tensor([[True, True, False, True], [False, False, False, False]])  # (D, S)
    line = plotting.success_vs_delay(ax, [10, 20], success, label="copy, pre", color="tab:blue", n_networks=4,
                                     linestyle="--")
    assert np.allclose(line.get_xdata(), [10, 20]) and np.allclose(line.get_ydata(), [0.75, 0.0])
    assert line.get_linestyle() == "--" and line.get_marker() == "o" and line.get_label() == "copy, pre"
    notes = [(t.get_text(), t.xy) for t in ax.texts]
    assert notes == [("3/4", (10.0, 0.75)), ("0/4", (20.0, 0.0))]
    assert ax.get_xlabel() == "delay d" and ax.get_ylabel() == "success rate"
    line = plotting.success_vs_delay(ax, np.array([1]), np.array([[1, 0]], dtype=bool), marker="s")
    assert line.get_marker() == "s" and ax.texts[-1].get_text() == "1/2"
    with pytest.raises(ValueError, match="n_networks"):
        plotting.success_vs_delay(ax, [10, 20], success, n_networks=5)
    with pytest.raises(ValueError, match="delays"):
        plotting.success_vs_delay(ax, [10, 20, 30], success)


def test_steps_vs_delay_is_the_median_of_the_networks_that_reached(ax):
    steps = torch.tensor([[100, -1, 300], [-1, -1, -1], [50, 70, -1]])  # (D, S), -1: never
    line = plotting.steps_vs_delay(ax, [1, 2, 3], steps, color="k", linestyle=":")
    y = line.get_ydata()
    assert y[0] == 200 and np.isnan(y[1]) and y[2] == 60  # a delay without successes is a gap
    assert line.get_linestyle() == ":" and line.get_marker() == "o"
    with pytest.raises(ValueError, match="delays"):
        plotting.steps_vs_delay(ax, [1, 2], steps)


def test_success_counts_for_record():
    success = torch.tensor([[True, False], [True, True]])
    assert plotting.success_counts("copy_pre", [4, 8], success) == {"copy_pre_d4_successes": 1,
                                                                     "copy_pre_d8_successes": 2}
    counts = plotting.success_counts("x", np.array([4]), np.array([[False, False]]))
    assert counts == {"x_d4_successes": 0} and type(counts["x_d4_successes"]) is int
    with pytest.raises(ValueError):
        plotting.success_counts("x", [4, 8, 16], success)


def test_median_decades_of_gradient_profiles():
    tau = torch.arange(5, dtype=torch.float64)
    profile = torch.stack([10.0 ** tau, 10.0 ** (-2 * tau), torch.ones(5, dtype=torch.float64)])  # (E, L)
    assert plotting.median_decades(profile) == pytest.approx(4.0)  # spans 4, 8 and 0 decades
    assert plotting.median_decades(profile.T, axis=0) == pytest.approx(4.0)
    # the same numbers as numpy's log10 and median of the ratio, bit for bit (the figure 1 numbers depend on it)
    p = torch.rand(4, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
    expected = float(np.median(np.log10((p.max(1).values / p.min(1).values).numpy())))
    assert plotting.median_decades(p) == expected
    with pytest.raises(ValueError, match="2-D"):
        plotting.median_decades(tau)
