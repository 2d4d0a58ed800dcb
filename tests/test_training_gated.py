"""The hand-differentiated LSTM and GRU BPTT (``training.gated_bptt``) against autograd
(``task_loss(method="autograd")``), and ``train`` with it."""
import copy
import functools

import pytest
import torch
from helpers import copy_network, gen, saved_bytes

from floss_core import FlossSchedule, TrainConfig, train
from floss_core.cells import GRU, LSTM, TanhRNN
from floss_core.tasks import TaskBatch, TaskConfig
from floss_core.training import task_loss as _task_loss
from floss_core.training import gated_steps
from floss_core.training.gated_bptt import gated_task_loss, supports_gated_bptt

task_loss = functools.partial(_task_loss, method="autograd")  # the reference these tests compare against

F64 = torch.float64
CELLS = {"LSTM": LSTM, "GRU": GRU}
cells = pytest.mark.parametrize("cell", list(CELLS))


def make_case(cell, E, B, I, O, T, dtype=F64, seed=0, H=7, gain=1.3):
    """A model with random h0 (both parts of the LSTM's [h, c]) and c, and a random batch of real-valued inputs whose
    masks start at random delays (0 to T / 2, so some steps of every network have no target)."""
    g = gen(seed)
    model = CELLS[cell](I, H, O, n_networks=E, gain=gain, generator=g, dtype=dtype)
    with torch.no_grad():
        model.h0.normal_(generator=g)
        model.c.normal_(generator=g)
    inputs = torch.randn(E, B, T, I, generator=g, dtype=dtype)
    targets = torch.randint(0, 2, (E, B, T, O), generator=g).to(dtype)
    delay = torch.randint(0, T // 2 + 1, (E, 1, 1, O), generator=g)
    mask = (torch.arange(T).view(1, 1, T, 1) >= delay).to(dtype).expand(E, B, T, O).contiguous()
    return model, TaskBatch(inputs=inputs, targets=targets, mask=mask, bits=None)


def names(model):
    return [n for n, _ in model.named_parameters()] + ["inputs"]


def loss_and_grads(fn, model, batch, **kw):
    """Loss (E,), accuracy (E,) and the gradients of every parameter and of the inputs for a weighted sum of the
    losses (h0 expanded as train does, so that autograd sums its (E, B, S) gradient into h0 (E, S))."""
    inputs = batch.inputs.clone().requires_grad_()
    b = TaskBatch(inputs=inputs, targets=batch.targets, mask=batch.mask, bits=None)
    loss, acc = fn(model, b, model.train_state(batch.inputs.shape[1]), **kw)
    weights = torch.arange(1, loss.shape[0] + 1, dtype=loss.dtype, device=loss.device)  # distinct per network
    params = [p for _, p in model.named_parameters()] + [inputs]
    return loss.detach(), acc, torch.autograd.grad((weights * loss).sum(), params)


def max_rel_err(got, want, model):
    """{name: relative error} of each gradient."""
    return {n: float((a - b).norm() / b.norm().clamp_min(1e-300)) for n, a, b in zip(names(model), got, want)}


def assert_grads_close(got, want, model, rtol):
    errs = max_rel_err(got, want, model)
    assert max(errs.values()) < rtol, errs


SHAPES = [  # E, B, I, O, T
    (1, 1, 1, 1, 1), (3, 4, 1, 1, 40), (2, 3, 2, 3, 25), (5, 2, 3, 2, 17), (4, 1, 1, 2, 9), (2, 4, 3, 1, 2)]


@cells
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_loss_and_gradients_match_autograd_in_float64(cell, shape):
    model, batch = make_case(cell, *shape, seed=sum(shape))
    loss, acc, grads = loss_and_grads(gated_task_loss, model, batch)
    loss_ref, acc_ref, grads_ref = loss_and_grads(task_loss, model, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-13, atol=0)
    assert torch.equal(acc, acc_ref) and not acc.requires_grad
    assert_grads_close(grads, grads_ref, model, 1e-12)


@cells
@pytest.mark.parametrize("checkpoint", [1, 7, 8, 39, 40, 100])
def test_checkpointed_loss_and_gradients_match_autograd(cell, checkpoint):
    """Stretches of 7 steps (not dividing T = 40), of 8 (dividing it), of one step, one step short of T, T and
    beyond."""
    model, batch = make_case(cell, 3, 2, 2, 2, 40, seed=11)
    loss, acc, grads = loss_and_grads(gated_task_loss, model, batch, checkpoint=checkpoint)
    loss_ref, acc_ref, grads_ref = loss_and_grads(task_loss, model, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-13, atol=0)
    assert torch.equal(acc, acc_ref)
    assert_grads_close(grads, grads_ref, model, 1e-12)


@cells
@pytest.mark.parametrize("checkpoint", [0, 7])
def test_the_backward_in_chunks_matches_autograd(cell, checkpoint, monkeypatch):
    """The backward's ring of adjoints holds a chunk of steps (~512 rows of steps x trajectories); with 6 rows, chunks
    of 2 steps at B = 3, over stretches of 7 (chunks 2, 2, 2, 1) or over all 25 steps."""
    monkeypatch.setattr(gated_steps, "_CHUNK_ROWS", 6)
    model, batch = make_case(cell, 2, 3, 2, 2, 25, seed=19)
    loss, acc, grads = loss_and_grads(gated_task_loss, model, batch, checkpoint=checkpoint)
    loss_ref, acc_ref, grads_ref = loss_and_grads(task_loss, model, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-13, atol=0)
    assert_grads_close(grads, grads_ref, model, 1e-12)


@cells
def test_the_backward_at_the_benchmark_batch_matches_autograd(cell):
    """B = 16: chunks of 32 steps, over T = 80 (two full chunks and a half)."""
    model, batch = make_case(cell, 2, 16, 1, 1, 80, seed=20, H=12)
    _, _, grads = loss_and_grads(gated_task_loss, model, batch)
    _, _, grads_ref = loss_and_grads(task_loss, model, batch)
    assert_grads_close(grads, grads_ref, model, 1e-12)


@cells
def test_gradients_in_float32_are_as_close_to_float64_as_autograds(cell):
    """Both float32 paths against the float64 gradients: within 1e-5 (autograd's own error is ~1e-7 here)."""
    model, batch = make_case(cell, 3, 4, 1, 1, 40, seed=7, H=32, gain=1.0)
    _, _, exact = loss_and_grads(task_loss, model, batch)
    m32 = model.float()
    b32 = TaskBatch(inputs=batch.inputs.float(), targets=batch.targets.float(), mask=batch.mask.float(), bits=None)
    loss, _, grads = loss_and_grads(gated_task_loss, m32, b32)
    loss_ref, _, grads_ref = loss_and_grads(task_loss, m32, b32)
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=0)
    assert_grads_close([g.double() for g in grads], exact, m32, 1e-5)
    assert_grads_close(grads, grads_ref, m32, 1e-5)


@cells
def test_checkpointing_bounds_the_memory_held_for_the_backward_at_3000_steps(cell):
    """Segments of 50 over T = 3000: what the backward holds is the parameters, the batch and the state before every
    segment (nothing per step), under a twentieth of what the plain backward holds."""
    E, B, H, T, seg = 2, 4, 16, 3000, 50
    model, batch = make_case(cell, E, B, 1, 1, T, dtype=torch.float32, seed=52, H=H)

    def held(checkpoint):
        return saved_bytes(lambda: gated_task_loss(model, batch, model.train_state(B), checkpoint=checkpoint)[0].sum())

    plain, segmented = held(0), held(seg)
    params = sum(p.numel() for p in model.parameters()) * 4
    data = sum(t.numel() for t in (batch.inputs, batch.targets, batch.mask)) * 4
    states = (T // seg) * E * B * model.state_size * 4
    assert segmented <= params + data + states, (segmented, params, data, states)
    assert segmented < plain / 20, (plain, segmented)


@cells
def test_an_ensemble_gives_each_network_what_it_gives_alone(cell):
    model, batch = make_case(cell, 4, 3, 2, 2, 30, seed=3)
    loss, acc, grads = loss_and_grads(gated_task_loss, model, batch)
    for e in range(4):
        one = copy_network(model, CELLS[cell](2, 7, 2, dtype=F64), e)
        b = TaskBatch(**{k: getattr(batch, k)[e:e + 1] for k in ("inputs", "targets", "mask")}, bits=None)
        loss1, acc1, grads1 = loss_and_grads(gated_task_loss, one, b)
        torch.testing.assert_close(loss1, loss[e:e + 1], rtol=1e-14, atol=0)
        assert torch.equal(acc1, acc[e:e + 1])
        assert_grads_close(grads1, [g[e:e + 1] / (e + 1) for g in grads], one, 1e-13)  # network e's loss weighs e + 1


@cells
@pytest.mark.parametrize("name, poison", [("W", float("nan")), ("h0", float("nan")), ("V", float("inf"))])
def test_a_non_finite_network_leaves_the_others_untouched(cell, name, poison):
    """(An infinite W saturates the gates and leaves the loss finite: inf goes into the readout.)"""
    model, batch = make_case(cell, 3, 2, 1, 1, 20, seed=5)
    loss_clean, _, clean = loss_and_grads(gated_task_loss, model, batch)
    with torch.no_grad():
        getattr(model, name)[(1, 3) if name == "h0" else (1, 0, 3)] = poison
    loss, _, grads = loss_and_grads(gated_task_loss, model, batch)
    assert torch.isfinite(loss).tolist() == [True, False, True]
    for g, c in zip(grads, clean):
        assert torch.equal(g[[0, 2]], c[[0, 2]])
    assert torch.equal(loss[[0, 2]], loss_clean[[0, 2]])


@cells
def test_the_bits_do_not_depend_on_the_number_of_workers(cell):
    model, batch = make_case(cell, 5, 3, 1, 1, 30, dtype=torch.float32, seed=9)
    for checkpoint in (0, 8):
        one = loss_and_grads(gated_task_loss, model, batch, group=2, workers=1, checkpoint=checkpoint)
        two = loss_and_grads(gated_task_loss, model, batch, group=2, workers=2, checkpoint=checkpoint)
        assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
        assert all(torch.equal(a, b) for a, b in zip(one[2], two[2]))
    assert torch.get_num_threads() == 1  # restored (conftest sets one thread)


@cells
def test_other_sub_batches_give_the_same_numbers_up_to_roundoff(cell):
    model, batch = make_case(cell, 5, 3, 1, 1, 30, seed=10)
    ref = loss_and_grads(gated_task_loss, model, batch, group=5)
    for kw in ({}, {"group": 1}, {"group": 3, "workers": 2}):
        loss, _, grads = loss_and_grads(gated_task_loss, model, batch, **kw)
        torch.testing.assert_close(loss, ref[0], rtol=1e-14, atol=0)
        assert_grads_close(grads, ref[2], model, 1e-13)


@cells
def test_graphs_alive_at_once_keep_their_own_buffers(cell):
    """A second forward before the first backward, and a backward run twice: the buffers reused between calls are
    never shared by live graphs."""
    model, batch = make_case(cell, 2, 3, 1, 1, 25, seed=12)
    _, other = make_case(cell, 2, 3, 1, 1, 25, seed=13)
    h0 = model.train_state(3)
    ref = torch.autograd.grad(gated_task_loss(model, batch, h0)[0].sum(), model.W)[0]
    first = gated_task_loss(model, batch, h0)[0].sum()
    second = gated_task_loss(model, other, h0)[0].sum()
    g1 = torch.autograd.grad(first, model.W, retain_graph=True)[0]
    g2 = torch.autograd.grad(second, model.W)[0]
    assert torch.equal(g1, torch.autograd.grad(first, model.W)[0])
    torch.testing.assert_close(g1, ref, rtol=1e-14, atol=0)
    assert not torch.allclose(g1, g2)


@cells
def test_without_gradients_the_loss_is_the_same(cell):
    """Under no_grad (in stretches of 64 steps, or of ``checkpoint``) and inference_mode (buffers made there must stay
    writable by worker threads and later calls)."""
    model, batch = make_case(cell, 4, 2, 1, 1, 150, seed=14)
    loss, acc = gated_task_loss(model, batch, model.train_state(2))
    with torch.no_grad():
        loss_64, acc_64 = gated_task_loss(model, batch, model.train_state(2))
        loss_ng, acc_ng = gated_task_loss(model, batch, model.train_state(2), checkpoint=5, group=2, workers=2)
    torch.testing.assert_close(loss_64, loss.detach(), rtol=1e-14, atol=0)
    assert torch.equal(acc, acc_64)
    with torch.inference_mode():
        loss_inf = gated_task_loss(model, batch, model.train_state(2), checkpoint=5, group=2, workers=2)[0].clone()
    torch.testing.assert_close(loss_ng, loss.detach(), rtol=1e-14, atol=0)
    assert torch.equal(acc, acc_ng) and not loss_ng.requires_grad
    assert torch.equal(loss_inf, loss_ng)
    _, _, grads = loss_and_grads(gated_task_loss, model, batch)
    assert all(torch.isfinite(g).all() for g in grads)


@cells
def test_batches_in_another_memory_layout_give_the_same_numbers(cell):
    model, batch = make_case(cell, 3, 4, 2, 2, 20, seed=16)
    ref = loss_and_grads(gated_task_loss, model, batch, checkpoint=6)
    strided = TaskBatch(**{k: getattr(batch, k).transpose(1, 2).contiguous().transpose(1, 2)
                           for k in ("inputs", "targets", "mask")}, bits=None)
    out = loss_and_grads(gated_task_loss, model, strided, checkpoint=6)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-14, atol=0)
    assert_grads_close(out[2], ref[2], model, 1e-13)


@cells
def test_task_loss_uses_the_gated_bptt_by_default(cell):
    model, batch = make_case(cell, 2, 3, 1, 1, 15, seed=17)
    fast = loss_and_grads(_task_loss, model, batch)
    gated = loss_and_grads(gated_task_loss, model, batch)
    assert torch.equal(fast[0], gated[0]) and all(torch.equal(a, b) for a, b in zip(fast[2], gated[2]))


@cells
@pytest.mark.parametrize("checkpoint", [0, 7])
def test_training_with_the_fast_bptt_follows_autograd(cell, checkpoint):
    """Five steps of ``train`` (fresh batches, per-network clipping, Adam, trained h0) from the same start, float64:
    bptt="fast" and bptt="autograd" end at the same parameters."""
    task = TaskConfig(name="xor", delay=4, seq_len=30, batch=4)
    runs = {}
    for bptt in ("fast", "autograd"):
        model = CELLS[cell](1, 16, 1, n_networks=3, generator=gen(17), dtype=F64)
        config = TrainConfig(n_steps=5, lr=1e-2, clip=0.5, record_every=0, checkpoint=checkpoint, bptt=bptt)
        hist = train(model, task, config=config, schedule=FlossSchedule.none(), generator=gen(18), progress=False)
        runs[bptt] = (hist, dict(model.named_parameters()))
    (h_fast, p_fast), (h_auto, p_auto) = runs["fast"], runs["autograd"]
    torch.testing.assert_close(h_fast.loss, h_auto.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(h_fast.grad_norm, h_auto.grad_norm, rtol=1e-10, atol=0)
    for name, p in p_fast.items():
        torch.testing.assert_close(p, p_auto[name], rtol=1e-10, atol=1e-12, msg=name)
    assert p_fast["h0"].abs().sum() > 0  # trained from zeros


def test_only_gated_cells_with_their_own_dynamics_are_supported():
    class Leaky(GRU):
        def step(self, h, x):
            return 0.5 * h + 0.5 * super().step(h, x)

    class Renamed(LSTM):  # overrides nothing the BPTT depends on
        pass

    leaky = Leaky(1, 4, 1)
    assert supports_gated_bptt(LSTM(1, 4, 1)) and supports_gated_bptt(GRU(1, 4, 1))
    assert supports_gated_bptt(Renamed(1, 4, 1))
    assert not supports_gated_bptt(leaky) and not supports_gated_bptt(TanhRNN(1, 4, 1))
    _, batch = make_case("GRU", 1, 2, 1, 1, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="Leaky"):
        gated_task_loss(leaky, batch, leaky.train_state(2))
    fast, auto = _task_loss(leaky, batch, leaky.train_state(2)), task_loss(leaky, batch, leaky.train_state(2))
    assert torch.equal(fast[0], auto[0])  # task_loss falls back to autograd for it


@pytest.mark.parametrize("kw, match", [
    ({"checkpoint": -1}, "checkpoint must be"), ({"checkpoint": True}, "checkpoint must be"),
    ({"workers": 0}, "workers must"), ({"group": 1.5}, "group must")])
def test_bad_arguments_raise(kw, match):
    model, batch = make_case("LSTM", 1, 2, 1, 1, 5)
    with pytest.raises(ValueError, match=match):
        gated_task_loss(model, batch, model.train_state(2), **kw)


def test_mismatched_batches_raise():
    model, _ = make_case("GRU", 1, 2, 1, 1, 5)
    _, batch = make_case("GRU", 1, 2, 2, 1, 5)
    with pytest.raises(ValueError, match="channels"):
        gated_task_loss(model, batch, model.train_state(2))
    _, batch = make_case("GRU", 1, 2, 1, 1, 5)
    with pytest.raises(ValueError, match="h0 must be"):
        gated_task_loss(model, batch, model.train_state(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@cells
def test_cuda_gives_the_cpu_numbers(cell):
    model, batch = make_case(cell, 3, 4, 2, 1, 40, seed=15)
    ref = loss_and_grads(gated_task_loss, model, batch)
    gpu = copy.deepcopy(model).cuda()
    b = TaskBatch(**{k: getattr(batch, k).cuda() for k in ("inputs", "targets", "mask")}, bits=None)
    for checkpoint in (0, 7):
        loss, acc, grads = loss_and_grads(gated_task_loss, gpu, b, checkpoint=checkpoint)
        torch.testing.assert_close(loss.cpu(), ref[0], rtol=1e-13, atol=0)
        assert torch.equal(acc.cpu(), ref[1])
        assert_grads_close([g.cpu() for g in grads], ref[2], model, 1e-12)
