"""Figure 6's sweep: its networks are what its docstring says (the seed's weights plus the memory bias, preflossed
with k, trained on the named streams), its gate statistics are those of these networks, and a bad config names the
argument."""
import pytest
import torch

from floss_core.diagnostics import gate_statistics
from floss_core.experiments import GatedSweep, build, gated_sweep, summarize_gated_sweep
from floss_core.experiments.gated_sweep import bracket_delays, gated_conditions
from floss_core.experiments.common import network_generators
from floss_core.flossing import floss
from floss_core.tasks import bit_signal, random_bits
from floss_core.training import FlossSchedule, train

H = 4
SWEEP = build(GatedSweep, memory_biases=[0.0, 1.0], ks=[0, 2], tasks=["copy"], delays=[2, 3], n_networks=2,
              seq_len=10, batch=3, model={"n_hidden": H, "dtype": "float64"}, train={"n_steps": 4},
              floss={"seq_len": 10, "n_transient": 2}, schedule={"pre_steps": 2}, gate_batch=2, shard_size=5)


@pytest.fixture(scope="module")
def result():
    return gated_sweep(SWEEP, progress=False)


def _initial(cell, bias, seeds):
    return SWEEP.model_config(cell, bias).build(1, 1, n_networks=len(seeds),
                                                generator=network_generators(SWEEP.seed, "init",
                                                                             [f"s{i}" for i in seeds]))


def test_result_shapes(result):
    NB, K, J, D, S = 2, 2, 1, 2, 2
    for cell in ("lstm", "gru"):
        assert result["accuracy"][cell].shape == (SWEEP.train.n_steps, NB, K, J, D, S)
        assert result["failed"][cell].shape == (NB, K, J, D, S)
        for v in result["gates"][cell].values():
            assert v.shape == (NB, K, S)
    assert set(result["gates"]["lstm"]) == {"input", "forget", "candidate", "output", "abs_cell"}
    assert set(result["gates"]["gru"]) == {"reset", "update", "candidate"}
    summary = summarize_gated_sweep(result)
    assert summary["success"]["gru"].shape == (NB, K, J, D, S) and summary["success"]["gru"].dtype == torch.bool


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_memory_bias_only_shifts_the_memory_gate_bias(result, cell):
    """Before flossing (k = 0) the networks of a seed differ between memory biases by exactly +1 on gate 1's bias."""
    state = result["pre_state"][cell]
    for name, v in state.items():
        if name == "b":
            shift = torch.zeros_like(v[0, 0])
            shift[..., H:2 * H] = 1.0
            torch.testing.assert_close(v[1, 0], v[0, 0] + shift, rtol=0, atol=1e-12)
        else:
            torch.testing.assert_close(v[1, 0], v[0, 0], rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_units_and_gate_statistics_equal_a_computation_by_hand(result, cell):
    seeds = list(range(SWEEP.n_networks))
    bits = random_bits(len(seeds), SWEEP.gate_batch, SWEEP.seq_len, 1,
                       generator=network_generators(SWEEP.seed, "gates", [f"s{i}" for i in seeds]))
    inputs = bit_signal(bits, SWEEP.encoding, dtype=torch.float64)  # (S, B, T, 1)
    for b, bias in enumerate(SWEEP.memory_biases):
        for q, k in enumerate(SWEEP.ks):
            model = _initial(cell, bias, seeds)
            if k:
                floss(model, SWEEP.schedule.pre_steps, config=SWEEP.floss_config(k), progress=False,
                      generator=network_generators(SWEEP.seed, "prefloss", [f"s{i}" for i in seeds]))
            for name, p in model.named_parameters():
                torch.testing.assert_close(result["pre_state"][cell][name][b, q], p.detach(), rtol=1e-9, atol=1e-12)
            h0 = model.h0.detach().unsqueeze(1).expand(-1, SWEEP.gate_batch, -1)
            gates = gate_statistics(model, inputs, h0=h0)
            for name, v in gates.items():
                torch.testing.assert_close(result["gates"][cell][name][b, q], v, rtol=1e-9, atol=1e-12)


def test_training_equals_a_network_trained_by_hand(result):
    """Unit (memory bias 1, k = 2, seed 1) on copy, d = 3, trained alone on its stream "copy/d3/s1"."""
    b, q, i, s, cell = 1, 1, 1, 1, "lstm"
    model = _initial(cell, 1.0, [s])
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(result["pre_state"][cell][name][b, q, s:s + 1])
    task = SWEEP.task_configs()[i]
    assert (task.name, task.delay) == ("copy", 3)
    h = train(model, task, config=SWEEP.train, floss_config=SWEEP.floss_config(1), schedule=FlossSchedule.none(),
              generator=network_generators(SWEEP.seed, "train", [f"copy/d3/s{s}"]), progress=False)
    torch.testing.assert_close(result["accuracy"][cell][:, b, q, 0, i, s], h.accuracy[:, 0], rtol=0, atol=1e-9)


def test_summary_equals_the_criterion_by_hand():
    acc = torch.rand(60, 1, 2, 1, 1, 3, generator=torch.Generator().manual_seed(0))
    acc[:20, 0, 1, 0, 0, 0], acc[20:, 0, 1, 0, 0, 0] = 0.0, 1.0
    acc[:, 0, 1, 0, 0, 1] = 1.0  # learned from the start, but its training failed (frozen)
    failed = torch.zeros(1, 2, 1, 1, 3, dtype=torch.bool)
    failed[0, 1, 0, 0, 1] = True
    res = {"accuracy": {"gru": acc}, "failed": {"gru": failed}}
    out = summarize_gated_sweep(res, threshold=0.85, window=10, last=5)
    # the running mean over steps 19..28 is 0.9, over 18..27 0.8: the criterion is met from step 28 on
    assert out["steps_to_criterion"]["gru"][0, 1, 0, 0, 0] == 28
    assert out["success"]["gru"][0, 1, 0, 0, 0] and not out["success"]["gru"][0, 0, 0, 0, 0]
    assert not out["success"]["gru"][0, 1, 0, 0, 1] and out["steps_to_criterion"]["gru"][0, 1, 0, 0, 1] == -1
    final = acc[-5:].mean(0)
    final[0, 1, 0, 0, 1] = float("nan")
    torch.testing.assert_close(out["final_accuracy"]["gru"], final, equal_nan=True)


@pytest.mark.parametrize("changes, name", [
    ({"ks": [0, 5]}, "GatedSweep.ks[1]"),  # above the GRU's state size H = 4
    ({"ks": [0, 2, 2]}, "GatedSweep.ks"),
    ({"cells": ["tanh"]}, "GatedSweep.cells[0]"),
    ({"memory_biases": [0.0, float("nan")]}, "GatedSweep.memory_biases[1]"),
    ({"model": {"n_hidden": H, "memory_bias": 1.0}}, "GatedSweep.model.memory_bias"),
    ({"schedule": {"pre_steps": 0}}, "GatedSweep.schedule.pre_steps"),
    ({"gate_batch": 0}, "GatedSweep.gate_batch"),
    ({"delays": [0]}, "GatedSweep.delays[0]"),
    ({"tasks": ["xor"], "delays": [3]}, "delay"),  # XOR needs an even delay
    ({"state_size": 0}, "GatedSweep.state_size"),
    ({"state_size": 5}, "GatedSweep.state_size"),  # odd: no LSTM has it
    ({"state_size": 6, "ks": [0, 7]}, "GatedSweep.ks[1]"),
])
def test_bad_configs_name_their_argument(changes, name):
    params = dict(ks=[0, 2], delays=[2], model={"n_hidden": H})
    params.update(changes)
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        build(GatedSweep, **params)


def test_an_lstm_only_sweep_may_floss_all_of_its_state():
    build(GatedSweep, cells=["lstm"], ks=[0, 2 * H], model={"n_hidden": H})
    with pytest.raises(ValueError, match="LSTM's state size"):
        build(GatedSweep, cells=["lstm"], ks=[2 * H + 1], model={"n_hidden": H})


def test_a_state_size_gives_the_lstm_half_the_units_of_the_gru():
    s = build(GatedSweep, ks=[0, 6], delays=[2], model={"n_hidden": H}, state_size=6)
    assert (s.n_hidden("lstm"), s.n_hidden("gru")) == (3, 6)
    assert (s.cell_state_size("lstm"), s.cell_state_size("gru")) == (6, 6)
    assert s.model_config("lstm", 1.0).build(1, 1).W.shape == (1, 12, 3)  # 4 gates of H = 3
    assert s.model_config("gru", 0.0).build(1, 1).W.shape == (1, 18, 6)


def test_gated_conditions_take_plain_training_from_the_probe_at_the_same_delays(result):
    summary = summarize_gated_sweep(result)
    flossed = {key: {cell: v[:, 1:, :, 1:] for cell, v in summary[key].items()} for key in
               ("success", "final_accuracy", "steps_to_criterion", "failed")}  # as a sweep of ks = (2,), d = 3
    plain = {key: {cell: v[:, :1] for cell, v in summary[key].items()} for key in flossed}  # ks = (0,)
    out = gated_conditions(flossed, "gru", [2], [3], plain=plain, plain_delays=[2, 3], bias=1)
    assert set(out["success"]) == {"none", "k2"}
    torch.testing.assert_close(out["final_accuracy"]["none"], summary["final_accuracy"]["gru"][1, 0, 0, 1:],
                               equal_nan=True)
    torch.testing.assert_close(out["final_accuracy"]["k2"], summary["final_accuracy"]["gru"][1, 1, 0, 1:],
                               equal_nan=True)
    both = gated_conditions(summary, "lstm", [0, 2], [2, 3])  # one sweep with k = 0 in it
    assert torch.equal(both["success"]["none"], summary["success"]["lstm"][0, 0, 0])
    with pytest.raises(ValueError, match="lack the delays"):
        gated_conditions(flossed, "gru", [2], [3], plain=plain, plain_delays=[2])


@pytest.mark.parametrize("counts, expected", [
    ([9, 9, 4, 0, 0], [20, 30, 40]),  # the border (first below half) at 40: the delay before it and after it
    ([9, 5, 5, 3, 0], [30, 40, 60]),
    ([2, 0, 0, 0, 0], [10, 20, 30]),  # nothing learns: the shortest delays
    ([9, 9, 9, 9, 1], [30, 40, 60]),  # the border is the last delay
    ([9, 9, 9, 9, 9], [30, 40, 60]),  # everything learns: the longest delays
])
def test_bracket_delays_start_one_before_the_first_delay_below_half_success(counts, expected):
    delays = [10, 20, 30, 40, 60]
    success = torch.tensor([[i < c for i in range(9)] for c in counts])
    assert bracket_delays(success, delays) == expected


def test_bracket_delays_reject_bad_input():
    ok = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="n"):
        bracket_delays(ok, [1, 2, 3], n=4)
    with pytest.raises(ValueError, match="increasing"):
        bracket_delays(ok, [1, 3, 2])
    with pytest.raises(ValueError, match="success"):
        bracket_delays(ok.float(), [1, 2, 3])
