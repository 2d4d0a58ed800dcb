"""The delay sweep does what the author's training loop does: "pre+during" continues the flossing Adam of
preflossing in its episodes, and the sweep's preflossed networks are returned."""
import dataclasses

import pytest
import torch

from floss_core.experiments import DelaySweep, build, delay_sweep, summarize_delay_sweep
from floss_core.experiments.common import network_generators
from floss_core.experiments.delay_sweep import initial_networks
from floss_core.flossing import floss, flossed_parameters
from floss_core.training import FlossSchedule, train

SWEEP = build(DelaySweep, tasks=["copy"], delays=[3], conditions=["pre", "pre+during"], n_networks=2,
              model={"n_hidden": 8}, train={"n_steps": 5, "record_every": 0}, batch=4, seq_len=12,
              floss={"k": 3, "seq_len": 12, "n_transient": 3},
              schedule={"pre_steps": 3, "every": 2, "episode_steps": 2, "max_episodes": 1})


def _by_hand(s: DelaySweep, fresh_episode_adam: bool):
    """The author's loop written out for the sweep's two seeds: preflossing with one Adam, then training with
    episodes that continue it (or, to show the difference, start a new one)."""
    model = initial_networks(s)
    config = s.floss_config()
    opt = torch.optim.Adam(flossed_parameters(model, config), lr=config.lr)
    floss(model, s.schedule.pre_steps, config=config, optimizer=opt,
          generator=network_generators(s.seed, "prefloss", ["s0", "s1"]))
    schedule = FlossSchedule(pre_steps=0, every=2, episode_steps=2, max_episodes=1)
    if fresh_episode_adam:
        opt = None
    tasks = s.grid()
    return train(model, tasks, config=s.train, floss_config=config, schedule=schedule, floss_optimizer=opt,
                 generator=network_generators(s.seed, "train", [f"copy/d3/s{i}" for i in range(2)]))


def test_pre_and_during_continues_the_flossing_adam_of_preflossing():
    res = delay_sweep(SWEEP, progress=False)
    got = res["pre+during"]["loss"][:, 0, 0, :]  # (steps, S)
    continued, fresh = _by_hand(SWEEP, False), _by_hand(SWEEP, True)
    torch.testing.assert_close(got, continued.loss, rtol=0, atol=0)
    assert not torch.equal(got, fresh.loss)  # a new Adam in the episodes gives other numbers
    new = delay_sweep(dataclasses.replace(SWEEP, episode_adam="new"), progress=False)
    torch.testing.assert_close(new["pre+during"]["loss"][:, 0, 0, :], fresh.loss, rtol=0, atol=0)


def test_episode_adam_must_be_continued_or_new():
    with pytest.raises(ValueError, match="DelaySweep.episode_adam"):
        dataclasses.replace(SWEEP, episode_adam="fresh")


def test_the_sweep_returns_its_preflossed_networks():
    res = delay_sweep(SWEEP, progress=False)
    model = initial_networks(SWEEP)
    floss(model, SWEEP.schedule.pre_steps, config=SWEEP.floss_config(),
          generator=network_generators(SWEEP.seed, "prefloss", ["s0", "s1"]))
    for name, p in model.named_parameters():
        torch.testing.assert_close(res["pre_state"][name], p.detach(), rtol=0, atol=0)


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("episode_adam", ["continued", "new"])
def test_pre_and_pre_during_share_their_training_up_to_the_first_episode(monkeypatch, episode_adam):
    """The training before the first episode runs once for both conditions (a prefix shard, resumed twice), with
    the same numbers, bit for bit, as each condition trained alone from step 0."""
    sweep = dataclasses.replace(SWEEP, delays=(3, 4), n_networks=3, shard_size=4, episode_adam=episode_adam,
                                train=dataclasses.replace(SWEEP.train, n_steps=6, record_every=2),
                                schedule=dataclasses.replace(SWEEP.schedule, every=3, max_episodes=2))
    module = __import__("importlib").import_module("floss_core.experiments.delay_sweep")
    steps = []

    def counting_train(model, tasks, **kw):
        h = train(model, tasks, **kw)
        start = kw["resume"].step if kw.get("resume") else 0
        steps.append((kw.get("stop") or kw["config"].n_steps) - start)
        return h

    monkeypatch.setattr(module, "train", counting_train)
    shared = delay_sweep(sweep, progress=False)
    shards = 2  # 6 networks per condition (1 task x 2 delays x 3 seeds), in shards of at most 4
    assert steps == [3] * shards + [3] * 2 * shards  # the prefixes to step 3, then "pre" and "pre+during" from it
    steps.clear()
    alone = {c: delay_sweep(dataclasses.replace(sweep, conditions=(c,)), progress=False)[c]
             for c in ("pre", "pre+during")}
    assert steps == [6] * 2 * shards  # one condition: no sharing, every shard from step 0
    for c in ("pre", "pre+during"):
        assert _same(shared[c], alone[c]), c


def _synthetic_result(delays, failed_at=None):
    """A delay_sweep-shaped result of one task, two conditions and 3 seeds: "pre" learns every delay, "none" only
    the first; ``failed_at`` (d, s) of "pre" failed (frozen after learning)."""
    D, n = len(delays), 120
    out = {"tasks": ["copy"], "delays": list(delays), "conditions": ["none", "pre"]}
    for c in out["conditions"]:
        acc = torch.full((n, 1, D, 3), 0.5)
        acc[60:, 0, : (D if c == "pre" else 1)] = 1.0
        failed = torch.zeros(1, D, 3, dtype=torch.bool)
        if c == "pre" and failed_at is not None:
            failed[0, failed_at[0], failed_at[1]] = True
            acc[60:, 0, failed_at[0], failed_at[1]] = 0.95  # learned before it failed (frozen there)
        out[c] = {"accuracy": acc, "failed": failed}
    return out


def test_a_network_whose_training_failed_is_no_success_and_has_no_final_accuracy():
    from floss_core.repro.numbers import delay_numbers

    res = _synthetic_result([10, 20], failed_at=(1, 2))
    out = summarize_delay_sweep(res, "copy")
    assert out["success"]["pre"].tolist() == [[True, True, True], [True, True, False]]
    assert out["steps_to_criterion"]["pre"][1, 2] == -1 and out["final_accuracy"]["pre"][1, 2].isnan()
    assert out["failed"]["pre"].sum() == 1
    numbers = delay_numbers("copy", [10, 20], out, ["none", "pre"])
    assert numbers["copy_pre_d20_successes"] == 2 and numbers["copy_pre_d20_n"] == 3
    kept = out["final_accuracy"]["pre"][1, :2]
    assert numbers["copy_pre_d20_final_mean"] == pytest.approx(float(kept.mean()))  # the 2 that did not fail
    assert float(res["pre"]["accuracy"][-100:, 0, 1, 2].mean()) < float(kept.mean())  # the failed one's was lower


def test_ties_go_to_the_longest_delay_whatever_the_order_of_the_delays():
    res = _synthetic_result([40, 20, 10])  # "pre" and "none" differ at 20 and 10 alike (3 of 3 vs 0 of 3)
    assert summarize_delay_sweep(res, "copy")["hardest_informative_delay_index"] == 1  # d = 20, not 10
    res = _synthetic_result([10, 20, 40])
    assert summarize_delay_sweep(res, "copy")["hardest_informative_delay_index"] == 2


@pytest.mark.parametrize("kw, match", [(dict(compare=["pree"]), "compare must name"), (dict(compare=[]), "compare"),
                                       (dict(window=0), "window")])
def test_summary_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        summarize_delay_sweep(_synthetic_result([10, 20]), "copy", **kw)
