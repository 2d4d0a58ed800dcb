"""The hand-differentiated TanhRNN BPTT (``training.tanh_bptt``) against autograd (``task_loss(method="autograd")``)."""
import copy

import pytest
import torch
from helpers import copy_network, gen, saved_bytes

from floss_core import ModelConfig, TanhRNN
from floss_core.ensemble import clip_per_network_
from floss_core.cells import LSTM
from floss_core.tasks import TaskBatch, TaskConfig
import functools

from floss_core.training import sample_task
from floss_core.training import task_loss as _task_loss
from floss_core.training.tanh_bptt import supports_tanh_bptt, tanh_task_loss

task_loss = functools.partial(_task_loss, method="autograd")  # the reference these tests compare against

F64 = torch.float64
NAMES = ("W", "U", "b", "V", "c", "h0", "inputs")


def make_case(E, B, I, O, T, dtype=F64, seed=0, N=12, gain=1.2):
    """A model with random h0 and c, and a random batch whose masks start at random delays (0 to T / 2)."""
    g = gen(seed)
    model = TanhRNN(I, N, O, n_networks=E, gain=gain, generator=g, dtype=dtype)
    with torch.no_grad():
        model.h0.normal_(generator=g)
        model.c.normal_(generator=g)
    inputs = (2 * torch.randint(0, 2, (E, B, T, I), generator=g) - 1).to(dtype)
    targets = torch.randint(0, 2, (E, B, T, O), generator=g).to(dtype)
    delay = torch.randint(0, T // 2 + 1, (E, 1, 1, O), generator=g)
    mask = (torch.arange(T).view(1, 1, T, 1) >= delay).to(dtype).expand(E, B, T, O).contiguous()
    return model, TaskBatch(inputs=inputs, targets=targets, mask=mask, bits=None)


def loss_and_grads(fn, model, batch, **kw):
    """Loss (E,), accuracy (E,) and the gradients of NAMES of a weighted sum of the losses (h0 expanded as train
    does, so autograd sums its (E, B, N) gradient into h0 (E, N))."""
    inputs = batch.inputs.clone().requires_grad_()
    b = TaskBatch(inputs=inputs, targets=batch.targets, mask=batch.mask, bits=None)
    loss, acc = fn(model, b, model.train_state(batch.inputs.shape[1]), **kw)
    weights = torch.arange(1, loss.shape[0] + 1, dtype=loss.dtype, device=loss.device)  # distinct per network
    params = [getattr(model, n) for n in NAMES[:-1]] + [inputs]
    return loss.detach(), acc, torch.autograd.grad((weights * loss).sum(), params)


def assert_grads_close(got, want, rtol):
    for name, a, b in zip(NAMES, got, want):
        err = float((a - b).norm() / b.norm().clamp_min(1e-300))
        assert err < rtol, (name, err)


SHAPES = [  # E, B, I, O, T
    (1, 1, 1, 1, 1), (3, 4, 1, 1, 40), (2, 3, 2, 3, 25), (5, 2, 3, 2, 17), (4, 1, 1, 2, 9), (2, 4, 3, 1, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_loss_and_gradients_match_autograd_in_float64(shape):
    model, batch = make_case(*shape, seed=sum(shape))
    loss, acc, grads = loss_and_grads(tanh_task_loss, model, batch)
    loss_ref, acc_ref, grads_ref = loss_and_grads(task_loss, model, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-13, atol=0)
    assert torch.equal(acc, acc_ref) and not acc.requires_grad
    assert_grads_close(grads, grads_ref, 1e-12)


def test_gradients_in_float32_are_as_close_to_float64_as_autograds():
    """Both float32 paths against the float64 gradients: within 1e-5 (autograd's own error is ~2e-7 here)."""
    model, batch = make_case(3, 4, 1, 1, 40, seed=7, N=32)
    _, _, exact = loss_and_grads(task_loss, model, batch)
    m32 = model.float()
    b32 = TaskBatch(inputs=batch.inputs.float(), targets=batch.targets.float(), mask=batch.mask.float(), bits=None)
    loss, _, grads = loss_and_grads(tanh_task_loss, m32, b32)
    loss_ref, _, grads_ref = loss_and_grads(task_loss, m32, b32)
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=0)
    assert_grads_close([g.double() for g in grads], exact, 1e-5)
    assert_grads_close(grads, grads_ref, 1e-5)


@pytest.mark.parametrize("checkpoint", [1, 7, 39, 40, 100])
def test_checkpointed_gradients_match_plain_ones(checkpoint):
    """Stretches of 7 steps (not dividing T = 40), one step, one step short of T, T and beyond."""
    model, batch = make_case(3, 2, 2, 1, 40, seed=11)
    loss, acc, grads = loss_and_grads(tanh_task_loss, model, batch, checkpoint=checkpoint)
    loss_ref, acc_ref, grads_ref = loss_and_grads(tanh_task_loss, model, batch)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-14, atol=0)
    assert torch.equal(acc, acc_ref)
    assert_grads_close(grads, grads_ref, 1e-13)


def test_checkpointing_holds_less_memory_for_the_backward():
    """Segments of 20 over T = 400 hold under a fifth of what the plain backward holds (the batch included)."""
    m = ModelConfig(n_hidden=32).build(1, 1, n_networks=4, generator=gen(52))
    _, batch = make_case(4, 8, 1, 1, 400, dtype=torch.float32, seed=53)

    def loss(seg):
        return tanh_task_loss(m, batch, m.train_state(8), checkpoint=seg)[0].sum()
    plain, segmented = saved_bytes(lambda: loss(0)), saved_bytes(lambda: loss(20))
    assert segmented < plain / 5, (plain, segmented)


def test_an_ensemble_gives_each_network_what_it_gives_alone():
    model, batch = make_case(4, 3, 2, 2, 30, seed=3)
    loss, acc, grads = loss_and_grads(tanh_task_loss, model, batch)
    for e in range(4):
        one = copy_network(model, TanhRNN(2, 12, 2, dtype=F64), e)
        b = TaskBatch(**{k: getattr(batch, k)[e:e + 1] for k in ("inputs", "targets", "mask")}, bits=None)
        loss1, acc1, grads1 = loss_and_grads(tanh_task_loss, one, b)
        torch.testing.assert_close(loss1, loss[e:e + 1], rtol=1e-14, atol=0)
        assert torch.equal(acc1, acc[e:e + 1])
        assert_grads_close(grads1, [g[e:e + 1] / (e + 1) for g in grads], 1e-13)  # network e's loss weighs e + 1


@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_a_non_finite_network_leaves_the_others_untouched(poison):
    model, batch = make_case(3, 2, 1, 1, 20, seed=5)
    loss_clean, _, clean = loss_and_grads(tanh_task_loss, model, batch)
    with torch.no_grad():
        model.W[1, 2, 3] = poison
    loss, _, grads = loss_and_grads(tanh_task_loss, model, batch)
    assert torch.isfinite(loss).tolist() == [True, False, True]
    for g, c in zip(grads, clean):
        assert torch.equal(g[[0, 2]], c[[0, 2]])
    assert torch.equal(loss[[0, 2]], loss_clean[[0, 2]])


def test_the_bits_do_not_depend_on_the_number_of_workers():
    model, batch = make_case(5, 3, 1, 1, 30, dtype=torch.float32, seed=9)
    for checkpoint in (0, 8):
        one = loss_and_grads(tanh_task_loss, model, batch, group=2, workers=1, checkpoint=checkpoint)
        two = loss_and_grads(tanh_task_loss, model, batch, group=2, workers=2, checkpoint=checkpoint)
        assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
        assert all(torch.equal(a, b) for a, b in zip(one[2], two[2]))
    assert torch.get_num_threads() == 1  # restored (conftest sets one thread)


def test_default_sub_batches_give_the_same_numbers_up_to_roundoff():
    model, batch = make_case(5, 3, 1, 1, 30, seed=10)
    ref = loss_and_grads(tanh_task_loss, model, batch, group=5)
    for kw in ({}, {"group": 1}, {"group": 3, "workers": 2}):
        loss, _, grads = loss_and_grads(tanh_task_loss, model, batch, **kw)
        torch.testing.assert_close(loss, ref[0], rtol=1e-14, atol=0)
        assert_grads_close(grads, ref[2], 1e-13)


def test_graphs_alive_at_once_keep_their_own_buffers():
    """A second forward before the first backward (as in a training loop that keeps the last loss), and a backward
    run twice: the buffers the engine reuses between calls are never shared by live graphs."""
    model, batch = make_case(2, 3, 1, 1, 25, seed=12)
    _, other = make_case(2, 3, 1, 1, 25, seed=13)
    h0 = model.train_state(3)
    ref = torch.autograd.grad(tanh_task_loss(model, batch, h0)[0].sum(), model.W)[0]
    first = tanh_task_loss(model, batch, h0)[0].sum()
    second = tanh_task_loss(model, other, h0)[0].sum()
    g1 = torch.autograd.grad(first, model.W, retain_graph=True)[0]
    g2 = torch.autograd.grad(second, model.W)[0]
    assert torch.equal(g1, torch.autograd.grad(first, model.W)[0])
    torch.testing.assert_close(g1, ref, rtol=1e-14, atol=0)
    assert not torch.allclose(g1, g2)


def test_a_call_under_inference_mode_gives_the_same_loss_and_spoils_no_later_call():
    """The engine's pooled buffers are normal tensors also when made under torch.inference_mode(), so that worker
    threads (outside inference mode) may write them and later calls with gradients may reuse them."""
    model, batch = make_case(4, 4, 1, 1, 20, seed=14)
    h0 = model.train_state(4)
    with torch.inference_mode():
        inferred = tanh_task_loss(model, batch, h0)[0]
    loss, _, grads = loss_and_grads(tanh_task_loss, model, batch)
    torch.testing.assert_close(inferred.clone(), loss, rtol=0, atol=0)
    assert all(torch.isfinite(g).all() for g in grads)


def test_batches_in_another_memory_layout_give_the_same_numbers():
    model, batch = make_case(3, 4, 2, 2, 20, seed=16)
    ref = loss_and_grads(tanh_task_loss, model, batch, checkpoint=6)
    strided = TaskBatch(**{k: getattr(batch, k).transpose(1, 2).contiguous().transpose(1, 2)
                           for k in ("inputs", "targets", "mask")}, bits=None)
    out = loss_and_grads(tanh_task_loss, model, strided, checkpoint=6)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-14, atol=0)
    assert_grads_close(out[2], ref[2], 1e-13)


def test_training_steps_follow_the_autograd_ones():
    """Five steps as ``train`` takes them (fresh batch, per-network clipping, Adam) from the same start, in float64."""
    task = TaskConfig(name="xor", delay=4, seq_len=30, batch=4)
    runs = {}
    for fn in (task_loss, tanh_task_loss):
        model = TanhRNN(1, 16, 1, n_networks=3, generator=gen(17), dtype=F64)
        opt, g = torch.optim.Adam(model.parameters(), lr=1e-2), gen(18)
        for _ in range(5):
            opt.zero_grad()
            fn(model, sample_task(task, model, g), model.train_state(4))[0].sum().backward()
            clip_per_network_(list(model.parameters()), 0.5)
            opt.step()
        runs[fn] = list(model.parameters())
    for a, b in zip(runs[tanh_task_loss], runs[task_loss]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_without_gradients_the_loss_is_the_same():
    model, batch = make_case(3, 2, 1, 1, 20, seed=14)
    loss, acc = tanh_task_loss(model, batch, model.train_state(2))
    with torch.no_grad():
        loss_ng, acc_ng = tanh_task_loss(model, batch, model.train_state(2), checkpoint=5)
    assert torch.equal(loss.detach(), loss_ng) and torch.equal(acc, acc_ng) and not loss_ng.requires_grad


def test_only_exact_tanh_rnns_are_supported():
    class Leaky(TanhRNN):
        def step(self, h, x):
            return 0.5 * h + 0.5 * super().step(h, x)

    rnn = TanhRNN(1, 4, 1)
    leaky = Leaky(1, 4, 1)
    lstm = LSTM(1, 4, 1)
    assert supports_tanh_bptt(rnn) and not supports_tanh_bptt(leaky) and not supports_tanh_bptt(lstm)
    _, batch = make_case(1, 2, 1, 1, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="TanhRNN"):
        tanh_task_loss(leaky, batch, leaky.train_state(2))


@pytest.mark.parametrize("kw, match", [
    ({"checkpoint": -1}, "checkpoint must be"), ({"checkpoint": True}, "checkpoint must be"),
    ({"workers": 0}, "workers must"), ({"group": 1.5}, "group must")])
def test_bad_arguments_raise(kw, match):
    model, batch = make_case(1, 2, 1, 1, 5)
    with pytest.raises(ValueError, match=match):
        tanh_task_loss(model, batch, model.train_state(2), **kw)


def test_mismatched_channels_raise():
    model, _ = make_case(1, 2, 1, 1, 5)
    _, batch = make_case(1, 2, 2, 1, 5)
    with pytest.raises(ValueError, match="channels"):
        tanh_task_loss(model, batch, model.train_state(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers():
    model, batch = make_case(3, 4, 2, 1, 40, seed=15)
    ref = loss_and_grads(tanh_task_loss, model, batch)
    gpu = copy.deepcopy(model).cuda()
    b = TaskBatch(**{k: getattr(batch, k).cuda() for k in ("inputs", "targets", "mask")}, bits=None)
    for checkpoint in (0, 7):
        loss, acc, grads = loss_and_grads(tanh_task_loss, gpu, b, checkpoint=checkpoint)
        torch.testing.assert_close(loss.cpu(), ref[0], rtol=1e-13, atol=0)
        assert torch.equal(acc.cpu(), ref[1])
        assert_grads_close([g.cpu() for g in grads], ref[2], 1e-12)
