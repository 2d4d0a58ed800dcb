"""The delay sweep does what the author's training loop does: "pre+during" continues the flossing Adam of
preflossing in its episodes, and the sweep's preflossed networks are returned."""
import dataclasses

import pytest
import torch

from floss_core.experiments import DelaySweep, build, delay_sweep
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
