"""The figure-5 sweep: one task per hierarchical XOR level (the author's task = -h) and per cross-channel XOR, a
(k, seed) grid per task whose networks are the documented ones whatever shard they run in, bad arguments refused up
front, and the outcome scored like figures 3-4."""
import pytest
import torch

from floss_core.experiments import ComplexitySweep, build, complexity_outcome, complexity_sweep
from floss_core.experiments.common import network_generators
from floss_core.flossing import floss
from floss_core.tasks import TaskConfig
from floss_core.training import FlossSchedule, train

N = 8
SMALL = dict(levels=[1, 2], author_delay=2, channel_xor=[3], channel_delay=3, ks=[0, 2, 5], n_networks=2,
             model={"n_hidden": N}, train={"n_steps": 3}, batch=3, seq_len=12, pre_steps=2,
             floss={"seq_len": 10, "n_transient": 2})


def small(**changes):
    return build(ComplexitySweep, **{**SMALL, **changes})


@pytest.fixture(scope="module")
def result():
    torch.set_num_threads(1)
    return complexity_sweep(small(shard_size=4), progress=False)


def test_the_defaults_are_the_authors_settings():
    s = ComplexitySweep()
    assert (s.seq_len, s.batch, s.train.n_steps, s.pre_steps, s.model.n_hidden) == (300, 16, 3001, 500, 80)
    assert s.encoding.kind == "author" and s.n_networks == 9 and s.ks[0] == 0 and s.ks[-1] == s.floss.k == 75
    assert [t.delay for t in s.tasks().values()] == [10, 20, 40]  # levels 1-3 at author_delay 5: lags up to 40


def test_each_level_is_the_authors_hierarchical_xor_and_each_channel_count_one_target():
    tasks = small().tasks()
    assert list(tasks) == ["h1", "h2", "cxor3"]
    for h in (1, 2):
        assert tasks[f"h{h}"] == TaskConfig.hierarchical_xor(h, 2, seq_len=12, batch=3)
    b = tasks["h2"].sample(generator=torch.Generator().manual_seed(0))
    bits = b.bits[0, :, :, 0]  # (B, T)
    want = bits[:, 6:10] ^ bits[:, 4:8] ^ bits[:, 2:6] ^ bits[:, 0:4]  # lags 2, 4, 6, 8 for t = 8..11
    assert torch.equal(b.targets[0, :, 8:, 0].long(), want) and not b.mask[0, :, :8].any()
    c = tasks["cxor3"]
    assert (c.name, c.delay, c.n_inputs, c.n_outputs) == ("channel_xor", 3, 3, 1)


def test_the_result_holds_every_task_k_and_seed(result):
    assert result["tasks"] == ["h1", "h2", "cxor3"] and result["ks"] == [0, 2, 5]
    for name in result["tasks"]:
        assert result["accuracy"][name].shape == (3, 3, 2)  # (steps, K, S)
        assert result["failed"][name].shape == (3, 2)


def test_a_network_is_the_same_whatever_shard_it_runs_in(result):
    for shard_size in (1, 5):  # every network alone; shards mixing ks
        other = complexity_sweep(small(shard_size=shard_size), progress=False)
        for name in result["tasks"]:
            torch.testing.assert_close(other["accuracy"][name], result["accuracy"][name], rtol=0, atol=0)


@pytest.mark.parametrize("task, C, j", [("h2", 1, 0), ("h2", 1, 2), ("cxor3", 3, 1)])
def test_a_network_is_its_documented_init_flossing_and_batches(result, task, C, j):
    """Network (task, k = ks[j], seed 1) by hand: init and preflossing keyed by inputs and seed, training by task and
    seed (k in no key)."""
    s, k = small(), small().ks[j]
    keys = [f"C{C}/s1"]
    model = s.model.build(C, s.tasks()[task].n_outputs, generator=network_generators(s.seed, "init", keys))
    if k:
        floss(model, s.pre_steps, config=s.floss_config(k), progress=False,
              generator=network_generators(s.seed, "prefloss", keys))
    h = train(model, s.tasks()[task], config=s.train, floss_config=s.floss_config(s.floss.k),
              schedule=FlossSchedule.none(), progress=False,
              generator=network_generators(s.seed, "train", [f"{task}/s1"]))
    torch.testing.assert_close(result["accuracy"][task][:, j, 1], h.accuracy[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("changes, message", [
    (dict(ks=[0, 9]), r"ComplexitySweep.ks\[1\] must be an int with 0 <= ComplexitySweep.ks\[1\] <= 8 \(the "
                      r"model's n_hidden\), got 9"),
    (dict(ks=[0, 2, 2]), r"ComplexitySweep.ks must not repeat a value, got \[0, 2, 2\]"),
    (dict(levels=[]), r"ComplexitySweep.levels must be a non-empty list, got \(\)"),
    (dict(levels=[0]), r"ComplexitySweep.levels\[0\] must be an int >= 1, got 0"),
    (dict(levels=[3]), r"level 3 spans lags up to 2\^3 \* author_delay = 16, which must be smaller than seq_len=12"),
    (dict(channel_xor=[1]), r"ComplexitySweep.channel_xor\[0\] must be an int >= 2, got 1"),
    (dict(channel_xor=3), r"ComplexitySweep.channel_xor must be a non-empty list, got 3"),
    (dict(channel_delay=12), r"ComplexitySweep.channel_delay must be smaller than seq_len=12, got 12"),
    (dict(author_delay=0), r"ComplexitySweep.author_delay must be an int >= 1, got 0"),
    (dict(pre_steps=0), r"ComplexitySweep.pre_steps must be an int >= 1, got 0"),
    (dict(n_networks=1.0), r"ComplexitySweep.n_networks must be an int >= 1, got 1.0"),
])
def test_bad_arguments_are_refused_naming_argument_bound_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        small(**changes)


def test_an_empty_channel_xor_is_no_second_task():
    assert list(small(channel_xor=[]).tasks()) == ["h1", "h2"]


def test_the_outcome_is_figure_3s_criterion_and_the_mean_of_the_last_steps():
    acc = torch.full((200, 1, 4), 0.5)  # (steps, K, S)
    acc[50:, 0, 0] = 1.0  # reaches 1 and stays: success
    acc[50:195, 0, 1] = 1.0  # drops for the last 5 steps: the running mean (50 steps) ends at 0.95 >= 0.9
    acc[50:185, 0, 2] = 1.0  # drops for the last 15 steps: the running mean ends at 0.85 < 0.9
    acc[:, 0, 3] = 1.0  # learned, but its training failed later (frozen at a good accuracy)
    failed = torch.tensor([[False, False, False, True]])
    out = complexity_outcome({"accuracy": {"h1": acc}, "failed": {"h1": failed}})["h1"]
    assert out["success"].tolist() == [[True, True, False, False]]  # a failed network is no success
    torch.testing.assert_close(out["final_accuracy"][0, :3], torch.tensor([1.0, 0.975, 0.925]))
    assert out["final_accuracy"][0, 3].isnan() and torch.equal(out["failed"], failed)
