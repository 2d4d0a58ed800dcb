"""Training: BPTT on tasks for ensembles, independence of networks, schedules, failure isolation."""
import dataclasses

import pytest
import torch

from floss_core import FlossConfig, FlossSchedule, ModelConfig, TaskConfig, TanhRNN, TrainConfig, train
from floss_core.training import sample_task, task_loss
from floss_core.ensemble import clip_per_network_
from helpers import saved_bytes


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


QUIET = dict(progress=False)
SMALL_FLOSS = FlossConfig(k=4, seq_len=30, n_transient=10)


def test_short_delay_copy_task_is_learned():
    m = ModelConfig(n_hidden=32).build(1, 1, n_networks=3, generator=gen(0))
    task = TaskConfig(name="copy", delay=4, seq_len=40, batch=16)
    h = train(m, task, config=TrainConfig(n_steps=200, record_every=0), schedule=FlossSchedule.none(),
              generator=gen(1), **QUIET)
    assert h.loss.shape == h.accuracy.shape == h.grad_norm.shape == (200, 3)
    assert (h.accuracy[-20:].mean(0) > 0.95).all()
    assert (h.accuracy[:3].mean(0) < 0.8).all()  # it was not solved from the start
    assert not h.failed.any()


def test_ensemble_gives_the_same_history_as_each_network_alone():
    E, N = 3, 16
    ens = ModelConfig(n_hidden=N, dtype="float64").build(1, 1, n_networks=E, generator=gen(2))
    task = TaskConfig(name="xor", delay=4, seq_len=20, batch=4)
    cfg = TrainConfig(n_steps=12, record_every=5)
    sched = FlossSchedule(pre_steps=3, every=5, episode_steps=2, max_episodes=1)
    h = train(ens, task, config=cfg,
              floss_config=SMALL_FLOSS, schedule=sched, generator=[gen(10 + e) for e in range(E)], **QUIET)
    for e in range(E):
        one = TanhRNN(1, N, 1, dtype=torch.float64)
        fresh = ModelConfig(n_hidden=N, dtype="float64").build(1, 1, n_networks=E, generator=gen(2))
        with torch.no_grad():
            for name, p in one.named_parameters():
                p.copy_(getattr(fresh, name)[e:e + 1])
        h1 = train(one, task, config=cfg, floss_config=SMALL_FLOSS, schedule=sched, generator=[gen(10 + e)],
                   **QUIET)
        torch.testing.assert_close(h1.loss[:, 0], h.loss[:, e], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(h1.grad_norm[:, 0], h.grad_norm[:, e], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(h1.exponents[:, 0], h.exponents[:, e], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(h1.pre_floss.exponents[:, 0], h.pre_floss.exponents[:, e], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(one.W[0], ens.W[e], rtol=1e-9, atol=1e-12)


def test_diverging_network_is_recorded_and_does_not_poison_the_others():
    task = TaskConfig(name="copy", delay=3, seq_len=20, batch=4)
    cfg = TrainConfig(n_steps=8, record_every=0)
    clean = ModelConfig(n_hidden=12).build(1, 1, n_networks=3, generator=gen(3))
    poisoned = ModelConfig(n_hidden=12).build(1, 1, n_networks=3, generator=gen(3))
    with torch.no_grad():
        poisoned.U[1] = 3e38  # network 1's drive b + U s overflows to inf at the first +1 input: loss NaN
        poisoned.b[1] = 3e38
    gens = lambda: [gen(20 + e) for e in range(3)]  # noqa: E731
    hc = train(clean, task, config=cfg, schedule=FlossSchedule.none(), generator=gens(), **QUIET)
    hp = train(poisoned, task, config=cfg, schedule=FlossSchedule.none(), generator=gens(), **QUIET)
    assert hp.failed.tolist() == [False, True, False]
    assert hp.failed_step.tolist() == [-1, 0, -1]
    for e in (0, 2):
        torch.testing.assert_close(hp.loss[:, e], hc.loss[:, e])
        torch.testing.assert_close(poisoned.W[e], clean.W[e])
    assert torch.isfinite(poisoned.W).all()  # the failed network was frozen, not filled with NaN


def test_schedule_runs_preflossing_and_at_most_n_episodes():
    m = ModelConfig(n_hidden=10).build(1, 1, n_networks=2, generator=gen(4))
    sched = FlossSchedule(pre_steps=3, every=4, episode_steps=2, max_episodes=2)
    h = train(m, TaskConfig(name="copy", delay=2, seq_len=15, batch=2), config=TrainConfig(n_steps=14, record_every=0),
              floss_config=SMALL_FLOSS, schedule=sched, generator=gen(5), **QUIET)
    assert h.pre_floss.exponents.shape == (3, 2, 4)
    assert [s for s, _ in h.episodes] == [4, 8]
    assert all(r.loss.shape == (2, 2) for _, r in h.episodes)


def test_flossing_weight_in_the_task_loss_changes_the_update():
    task = TaskConfig(name="copy", delay=2, seq_len=15, batch=2)
    cfg = TrainConfig(n_steps=3, record_every=0)
    a = ModelConfig(n_hidden=10).build(1, 1, generator=gen(6))
    b = ModelConfig(n_hidden=10).build(1, 1, generator=gen(6))
    train(a, task, config=cfg, floss_config=SMALL_FLOSS, schedule=FlossSchedule.none(), generator=gen(7), **QUIET)
    train(b, task, config=cfg, floss_config=SMALL_FLOSS, schedule=dataclasses.replace(FlossSchedule.none(), weight=1.0),
          generator=gen(7), **QUIET)
    assert not torch.allclose(a.W, b.W)


def test_h0_is_trained_only_when_asked():
    task = TaskConfig(name="copy", delay=2, seq_len=15, batch=2)
    for train_h0 in (True, False):
        m = ModelConfig(n_hidden=10).build(1, 1, generator=gen(8))
        train(m, task, config=TrainConfig(n_steps=3, record_every=0, train_h0=train_h0),
              schedule=FlossSchedule.none(), generator=gen(9), **QUIET)
        assert bool((m.h0 != 0).any()) == train_h0


def test_clipping_is_per_network_and_per_array():
    W = torch.zeros(3, 2, 2, requires_grad=True)
    W.grad = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 0.001), torch.full((2, 2), -5.0)])
    clip_per_network_([W], 0.03)
    norms = W.grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([0.03, 0.002, 0.03]))


def test_mismatched_task_channels_raise():
    m = ModelConfig(n_hidden=10).build(1, 1, generator=gen(10))
    with pytest.raises(ValueError, match="channel"):
        train(m, TaskConfig(name="copy", delay=2, seq_len=15, n_channels=2), config=TrainConfig(n_steps=1),
              schedule=FlossSchedule.none(), **QUIET)


@pytest.mark.parametrize("method", ["fast", "autograd"])
def test_a_batch_that_does_not_fit_the_model_raises_naming_it(method):
    """task_loss called by hand: every tensor's shape and dtype are checked before any computation (the fast path
    took E, B and T from the inputs alone: inputs of 5 steps with targets of 8 gave half the loss, silently)."""
    m = TanhRNN(1, 5, 1, n_networks=3, generator=gen(0), dtype=torch.float64)
    b = TaskConfig(name="copy", delay=2, seq_len=8, batch=4).sample(3, gen(1), dtype=torch.float64)
    h0 = m.train_state(4)
    cases = [(dataclasses.replace(b, inputs=b.inputs[:, :, :5]), h0, "batch.targets must be"),
             (dataclasses.replace(b, inputs=b.inputs[:2], targets=b.targets[:2], mask=b.mask[:2]), h0[:2],
              "batch.inputs must be .* E = 3"),
             (dataclasses.replace(b, targets=b.targets[:, :3], mask=b.mask[:, :3]), h0, "batch.targets must be"),
             (dataclasses.replace(b, mask=b.mask.float()), h0, "batch.mask must have the dtype"),
             (b, h0[:, :2], r"h0 must be \(E, B, S\) = \(3, 4, 5\)"),
             (b, h0.float(), "h0 must have the dtype")]
    for batch, h, match in cases:
        with pytest.raises(ValueError, match=match):
            task_loss(m, batch, h, method=method)
    assert torch.isfinite(task_loss(m, b, h0, method=method)[0]).all()


def test_a_float64_model_gets_task_inputs_encoded_in_float64():
    """With 3 channels the encoded bits are +-1/3: exact in the model's float64, not a float32 value cast up."""
    from floss_core.tasks import bit_signal

    m = TanhRNN(3, 4, 3, n_networks=2, generator=gen(0), dtype=torch.float64)
    task = TaskConfig(name="copy", delay=1, seq_len=6, batch=2, n_channels=3)
    batch = sample_task(task, m, gen(1))
    assert batch.inputs.dtype == torch.float64
    assert torch.equal(batch.inputs, bit_signal(batch.bits, task.encoding, torch.float64))


def test_an_episode_of_no_steps_is_none():
    """episode_steps = 0 schedules no episode (the schedule does not floss): training runs, no flossing config is
    needed, and no empty episode is recorded."""
    sched = FlossSchedule(pre_steps=0, every=2, episode_steps=0, max_episodes=2)
    assert not sched.flosses
    m = ModelConfig(n_hidden=8).build(1, 1, n_networks=2, generator=gen(3))
    h = train(m, TaskConfig(name="copy", delay=2, seq_len=10, batch=2), config=TrainConfig(n_steps=6, record_every=0),
              schedule=sched, generator=gen(4), **QUIET)
    assert h.episodes == [] and h.accuracy.shape[0] == 6


def test_unknown_task_name_raises():
    with pytest.raises(ValueError, match="unknown task"):
        TaskConfig(name="addition")


def test_one_task_per_network_gives_each_network_its_own_delay():
    from floss_core.training import sample_task
    m = ModelConfig(n_hidden=6).build(1, 1, n_networks=3, generator=gen(11))
    tasks = [TaskConfig(name="copy", delay=d, seq_len=12, batch=2) for d in (2, 5, 2)]
    b = sample_task(tasks, m, gen(12))
    assert b.inputs.shape == (3, 2, 12, 1)
    assert [int((b.mask[e, 0, :, 0] == 0).sum()) for e in range(3)] == [2, 5, 2]
    for e, d in enumerate((2, 5, 2)):
        torch.testing.assert_close(b.targets[e, :, d:, 0], b.bits[e, :, :-d, 0].to(b.targets.dtype))
    with pytest.raises(ValueError, match="share seq_len"):
        sample_task([TaskConfig(name="copy", delay=2, seq_len=12), TaskConfig(name="copy", delay=2, seq_len=13),
                     TaskConfig(name="copy", delay=2, seq_len=12)], m, gen(12))


@pytest.mark.parametrize("method", ["fast", "autograd"])
@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_checkpointed_bptt_gives_the_same_loss_and_gradients(cell, method):
    """Segments of 7 steps (not dividing T = 60), recomputed in the backward: same loss, accuracy and gradients."""
    m = ModelConfig(cell=cell, n_hidden=12, dtype="float64").build(1, 1, n_networks=2, generator=gen(50))
    batch = sample_task(TaskConfig(name="xor", delay=6, seq_len=60, batch=3), m, gen(51))
    h0 = m.train_state(3)
    out = {}
    for seg in (0, 7):
        loss, acc = task_loss(m, batch, h0, checkpoint=seg, method=method)
        out[seg] = (loss.detach(), acc, torch.autograd.grad(loss.sum(), list(m.parameters())))
    torch.testing.assert_close(out[7][0], out[0][0], atol=1e-13, rtol=1e-12)
    assert torch.equal(out[7][1], out[0][1])
    for a, b in zip(out[7][2], out[0][2]):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-11)


def test_checkpointing_holds_less_memory_for_the_backward():
    """Bytes held between forward and backward (saved-tensor hooks, which also see the checkpoints' segment-boundary
    states): segments of 20 over T = 400 hold under a fifth."""
    m = ModelConfig(n_hidden=32).build(1, 1, n_networks=4, generator=gen(52))
    batch = sample_task(TaskConfig(name="copy", delay=10, seq_len=400, batch=8), m, gen(53))

    def held(seg):  # hooks see autograd's saved tensors
        return saved_bytes(lambda: task_loss(m, batch, m.train_state(8), checkpoint=seg, method="autograd")[0].sum())

    plain, segmented = held(0), held(20)
    assert segmented < plain / 5, (plain, segmented)


def test_bad_checkpoint_raises():
    m = ModelConfig(n_hidden=8).build(1, 1, n_networks=1, generator=gen(54))
    batch = sample_task(TaskConfig(name="copy", delay=2, seq_len=10, batch=2), m, gen(55))
    with pytest.raises(ValueError, match="checkpoint must be"):
        task_loss(m, batch, m.train_state(2), checkpoint=-1)


def _same_history(a, b):
    for key in ("loss", "accuracy", "grad_norm", "exponents", "failed", "failed_step"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.exponent_steps == b.exponent_steps
    assert [s for s, _ in a.episodes] == [s for s, _ in b.episodes]


@pytest.mark.parametrize("cell", ["tanh", "gru"])
def test_training_stopped_and_resumed_equals_one_uninterrupted_run(cell):
    """stop/resume carry the Adams, the generators, the failures and the records: the same numbers, bit for bit,
    also when the state is resumed twice (it is not changed by resuming) and across a flossing episode."""
    E = 3
    cfg = ModelConfig(cell=cell, n_hidden=12, dtype="float64")
    task = TaskConfig(name="xor", delay=4, seq_len=20, batch=4)
    tc = TrainConfig(n_steps=14, record_every=4)
    sched = FlossSchedule(pre_steps=2, every=5, episode_steps=2, max_episodes=2)

    def run(**kw):
        model = cfg.build(1, 1, n_networks=E, generator=gen(3))
        gens = [gen(20 + e) for e in range(E)]
        return model, gens, train(model, task, config=tc, floss_config=SMALL_FLOSS, schedule=sched, generator=gens,
                                  **QUIET, **kw)

    whole_model, _, whole = run()
    model, gens, first = run(stop=7)  # across the first episode (at step 5), before the second (at step 10)
    assert whole.state is None and first.state.step == 7 and first.loss.shape == (7, E)
    for _ in range(2):
        again = cfg.build(1, 1, n_networks=E, generator=gen(99))
        again.load_state_dict(model.state_dict())
        rest = train(again, task, config=tc, floss_config=SMALL_FLOSS, schedule=sched,
                     generator=[gen(0) for _ in range(E)], resume=first.state, **QUIET)
        _same_history(rest, whole)
        assert all(torch.equal(p, q) for p, q in zip(again.parameters(), whole_model.parameters()))


def test_stop_and_resume_are_checked_before_any_step():
    m = ModelConfig(n_hidden=8).build(1, 1, n_networks=2, generator=gen(0))
    task = TaskConfig(name="copy", delay=2, seq_len=10, batch=2)
    tc = TrainConfig(n_steps=5, record_every=0)
    kw = dict(config=tc, schedule=FlossSchedule.none(), **QUIET)
    with pytest.raises(ValueError, match=r"stop must be an int with 1 <= stop <= 5 .*got 6"):
        train(m, task, generator=gen(1), stop=6, **kw)
    with pytest.raises(ValueError, match="stop and resume need explicit generators"):
        train(m, task, stop=2, **kw)
    state = train(m, task, generator=gen(1), stop=2, **kw).state
    with pytest.raises(ValueError, match=r"stop must be an int with 3 <= stop <= 5 .*got 2"):
        train(m, task, generator=gen(1), resume=state, stop=2, **kw)
    with pytest.raises(ValueError, match="resume must be a TrainState"):
        train(m, task, generator=gen(1), resume={"step": 2}, **kw)
    with pytest.raises(ValueError, match="resume holds 2 networks but the model has 3"):
        train(ModelConfig(n_hidden=8).build(1, 1, n_networks=3, generator=gen(0)), task, generator=gen(1),
              resume=state, **kw)
    with pytest.raises(ValueError, match="resume holds 1 generator states but 2"):
        train(m, task, generator=[gen(1), gen(2)], resume=state, **kw)
    with pytest.raises(ValueError, match="stop needs a floss_optimizer that is one torch.optim.Adam.*got SGD"):
        train(m, task, generator=gen(1), stop=2, floss_optimizer=torch.optim.SGD([m.W, m.U, m.b], lr=1e-3), **kw)
    with pytest.raises(ValueError, match="FlossConfig.params order"):
        train(m, task, generator=gen(1), stop=2, floss_optimizer=torch.optim.Adam([m.U, m.W, m.b], lr=1e-3), **kw)
    with pytest.raises(ValueError, match="floss_optimizer or resume, not both"):
        train(m, task, generator=gen(1), resume=state,
              floss_optimizer=torch.optim.Adam([m.W, m.U, m.b], lr=1e-3), **kw)
