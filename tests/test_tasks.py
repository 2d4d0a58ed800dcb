"""Tests of floss_core.tasks: the delayed copy / XOR / parity tasks.

Convention checked here: d = the longest lag, lags d/m, 2d/m, ..., d; the mask is 0 exactly for t < d (0-based)
and 1 for t >= d; targets at masked steps are 0.
"""
import dataclasses

import numpy as np
import pytest
import torch

from floss_core.tasks import (TASKS, InputEncoding, TaskBatch, TaskConfig, delay_from_author, make_batch,
                              task_n_bits)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _numpy_targets(bits: np.ndarray, delay: int, m: int) -> np.ndarray:
    """Independent reference: y[..., t, c] = (sum of the m bits at lags k d / m, k = 1..m) mod 2 for t >= d, else 0."""
    E, B, T, C = bits.shape
    y = np.zeros((E, B, T, C), dtype=np.int64)
    for t in range(delay, T):
        total = np.zeros((E, B, C), dtype=np.int64)
        for k in range(1, m + 1):
            total += bits[:, :, t - (k * delay) // m, :]
        y[:, :, t, :] = total % 2
    return y


@pytest.mark.parametrize("task, n_bits, delay, m", [
    ("copy", None, 5, 1),
    ("xor", None, 6, 2),
    ("parity", 3, 9, 3),
    ("parity", 4, 8, 4),
])
def test_targets_match_numpy_reference(task, n_bits, delay, m):
    b = make_batch(task, delay=delay, seq_len=30, batch=4, n_networks=2, n_bits=n_bits, generator=_gen(1))
    assert isinstance(b, TaskBatch)
    assert b.targets.shape == (2, 4, 30, 1)
    ref = _numpy_targets(b.bits.numpy(), delay, m)
    np.testing.assert_array_equal(b.targets.numpy(), ref.astype(b.targets.numpy().dtype))


def test_copy_and_xor_targets_by_explicit_formula():
    d = 6
    c = make_batch("copy", delay=d, seq_len=20, batch=3, generator=_gen(2))
    x = make_batch("xor", delay=d, seq_len=20, batch=3, generator=_gen(3))
    bc, bx = c.bits.numpy(), x.bits.numpy()
    np.testing.assert_array_equal(c.targets.numpy()[:, :, d:], bc[:, :, :-d])  # y_t = b_{t-d}
    np.testing.assert_array_equal(x.targets.numpy()[:, :, d:],
                                  bx[:, :, d // 2:-d // 2] ^ bx[:, :, :-d])  # y_t = b_{t-d/2} XOR b_{t-d}


@pytest.mark.parametrize("task, n_bits, delay", [("copy", None, 4), ("xor", None, 4), ("parity", 3, 6)])
def test_multichannel_targets_match_numpy_reference_per_channel(task, n_bits, delay):
    m = task_n_bits(task, n_bits)
    b = make_batch(task, delay=delay, seq_len=25, batch=3, n_networks=2, n_channels=3, n_bits=n_bits,
                   generator=_gen(4))
    for name in ("inputs", "targets", "mask", "bits"):
        assert getattr(b, name).shape == (2, 3, 25, 3)
    bits = b.bits.numpy()
    for c in range(3):  # each channel is its own single-channel task
        ref = _numpy_targets(bits[..., c:c + 1], delay, m)
        np.testing.assert_array_equal(b.targets.numpy()[..., c:c + 1], ref.astype(b.targets.numpy().dtype))
    assert not np.array_equal(bits[..., 0], bits[..., 1])  # channels draw independent bits


def test_input_is_exactly_two_bits_minus_one():
    b = make_batch("xor", delay=4, seq_len=20, batch=5, n_networks=2, n_channels=2, generator=_gen(5),
                   encoding=InputEncoding("pm1"))
    assert b.bits.dtype == torch.int64
    assert set(b.bits.unique().tolist()) <= {0, 1}
    assert torch.equal(b.inputs, (2 * b.bits - 1).to(b.inputs.dtype))
    assert b.inputs.dtype == torch.get_default_dtype()


@pytest.mark.parametrize("C, amplitude", [(1, 1.0), (4, 1.0), (3, 2.5)])
def test_author_encoding_is_bits_times_amplitude_over_channels(C, amplitude):
    """The author's code: bits in {0, 1} times I1, the input drive divided by the number of input channels."""
    b = make_batch("copy", delay=2, seq_len=12, batch=3, n_networks=2, n_channels=C, generator=_gen(5),
                   encoding=InputEncoding("author", amplitude))
    torch.testing.assert_close(b.inputs, b.bits.to(b.inputs.dtype) * amplitude / C, atol=1e-7, rtol=0)
    assert TaskConfig().encoding == InputEncoding() == InputEncoding("author", 1.0)  # the default


def test_hierarchical_xor_is_the_parity_of_2_to_the_h_bits_at_multiples_of_the_delay():
    t = TaskConfig.hierarchical_xor(2, 3, seq_len=40, batch=4)
    assert (t.name, t.n_bits, t.delay) == ("parity", 4, 12)
    b = t.sample(2, _gen(7))
    bits = b.bits[..., 0]
    expected = bits[:, :, 9:37] ^ bits[:, :, 6:34] ^ bits[:, :, 3:31] ^ bits[:, :, 0:28]  # lags 3, 6, 9, 12
    assert torch.equal(b.targets[:, :, 12:, 0].long(), expected)
    assert TaskConfig.hierarchical_xor(1, 5).delay == 10  # h = 1: the delayed XOR, lags 5 and 10


def test_channel_xor_has_one_target_the_xor_of_the_channels_at_the_delay():
    b = make_batch("channel_xor", delay=3, seq_len=15, batch=4, n_networks=2, n_channels=3, generator=_gen(9))
    assert b.inputs.shape == (2, 4, 15, 3) and b.targets.shape == b.mask.shape == (2, 4, 15, 1)
    expected = b.bits[:, :, :12].sum(-1) % 2  # b^1 xor b^2 xor b^3 at t - 3
    assert torch.equal(b.targets[:, :, 3:, 0].long(), expected) and torch.all(b.mask[:, :, :3] == 0)
    with pytest.raises(ValueError, match="n_channels"):
        TaskConfig(name="channel_xor", delay=3, n_channels=1)
    assert TaskConfig(name="channel_xor", delay=3, n_channels=4).n_outputs == 1


def test_mask_zero_exactly_before_delay_and_masked_targets_zero():
    d, T = 7, 20
    b = make_batch("parity", n_bits=7, delay=d, seq_len=T, batch=4, n_networks=2, n_channels=2, generator=_gen(6))
    assert b.mask.dtype == b.inputs.dtype
    assert torch.all(b.mask[:, :, :d] == 0)
    assert torch.all(b.mask[:, :, d:] == 1)
    assert b.mask.sum().item() == 2 * 4 * (T - d) * 2
    assert torch.all(b.targets[b.mask == 0] == 0)  # convention: undefined targets are 0
    assert set(b.targets.unique().tolist()) <= {0.0, 1.0}


def test_dtype_option():
    b = make_batch("copy", delay=2, seq_len=6, batch=2, generator=_gen(0), dtype=torch.float64)
    assert b.inputs.dtype == b.targets.dtype == b.mask.dtype == torch.float64


def test_same_seed_identical_batch_different_seed_different_bits():
    kw = dict(delay=4, seq_len=30, batch=8, n_networks=2, n_channels=2)
    a = make_batch("xor", generator=_gen(11), **kw)
    b = make_batch("xor", generator=_gen(11), **kw)
    c = make_batch("xor", generator=_gen(12), **kw)
    for name in ("inputs", "targets", "mask", "bits"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.bits, c.bits)


def test_networks_get_different_bits():
    b = make_batch("copy", delay=3, seq_len=40, batch=4, n_networks=2, generator=_gen(7))
    assert not torch.equal(b.bits[0], b.bits[1])


def test_bits_roughly_balanced():
    b = make_batch("copy", delay=1, seq_len=500, batch=64, n_networks=2, generator=_gen(8),
                   encoding=InputEncoding("pm1"))
    assert abs(b.bits.double().mean().item() - 0.5) < 0.05
    assert abs(b.inputs.double().mean().item()) < 0.1  # zero-mean +-1 input


def test_delay_from_author_mapping():
    assert delay_from_author("copy", 10) == 10
    assert delay_from_author("xor", 10) == 20
    assert delay_from_author("parity", 5, n_bits=3) == 15
    d = delay_from_author("xor", 7)
    b = make_batch("xor", delay=d, seq_len=30, batch=2, generator=_gen(9))
    bits = b.bits.numpy()
    # the author's XOR with "delay" 7 reads the bits 7 and 14 steps back
    np.testing.assert_array_equal(b.targets.numpy()[:, :, 14:], bits[:, :, 7:-7] ^ bits[:, :, :-14])


def test_task_n_bits():
    assert TASKS == ("copy", "xor", "parity", "channel_xor")
    assert task_n_bits("copy", None) == 1
    assert task_n_bits("xor", None) == 2
    assert task_n_bits("xor", 2) == 2
    assert task_n_bits("parity", 5) == 5


def test_task_config_defaults_and_sample():
    cfg = TaskConfig()
    assert (cfg.name, cfg.delay, cfg.seq_len, cfg.batch, cfg.n_channels, cfg.n_bits) == ("xor", 20, 300, 16, 1, None)
    assert cfg.m == 2
    small = TaskConfig(name="parity", delay=6, seq_len=15, batch=3, n_channels=2, n_bits=3)
    a = small.sample(2, _gen(10))
    b = make_batch("parity", delay=6, seq_len=15, batch=3, n_networks=2, n_channels=2, n_bits=3, generator=_gen(10))
    assert a.inputs.shape == (2, 3, 15, 2)
    for name in ("inputs", "targets", "mask", "bits"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.delay = 3  # frozen


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="add"), "unknown task"),
    (dict(task=None), "unknown task"),
    (dict(delay=0), "delay"),
    (dict(delay=-2), "delay"),
    (dict(delay=10, seq_len=10), "smaller than seq_len"),
    (dict(delay=12, seq_len=10), "smaller than seq_len"),
    (dict(task="xor", delay=5), "multiple"),
    (dict(task="parity", n_bits=3, delay=4), "multiple"),
    (dict(task="parity", n_bits=None), "requires n_bits"),
    (dict(task="parity", n_bits=0), "n_bits"),
    (dict(task="copy", n_bits=2), "disagrees"),
    (dict(task="xor", n_bits=1), "disagrees"),
    (dict(batch=0), "batch"),
    (dict(n_networks=0), "n_networks"),
    (dict(n_channels=0), "n_channels"),
    (dict(batch=2.0), "batch"),
    (dict(delay=2.0), "delay"),
    (dict(seq_len="10"), "seq_len"),
    (dict(n_networks=True), "n_networks"),
    (dict(dtype=torch.int64), "dtype"),
    (dict(generator=5), "generator must be a torch.Generator"),
    (dict(n_networks=2, generator=[torch.Generator()]), "list of 2"),
])
def test_bad_inputs_raise_value_error(kwargs, match):
    args = dict(task="copy", delay=2, seq_len=10, batch=2)
    args.update(kwargs)
    task = args.pop("task")
    with pytest.raises(ValueError, match=match):
        make_batch(task, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="nope"), "unknown task"),
    (dict(delay=300), "smaller than seq_len"),
    (dict(delay=21), "multiple"),
    (dict(batch=0), "batch"),
    (dict(n_channels=-1), "n_channels"),
])
def test_bad_task_config_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskConfig(**kwargs)


def test_bad_delay_from_author_raises_value_error():
    with pytest.raises(ValueError, match="unknown task"):
        delay_from_author("add", 3)
    with pytest.raises(ValueError, match="author_delay"):
        delay_from_author("xor", 0)
    with pytest.raises(ValueError, match="requires n_bits"):
        delay_from_author("parity", 3)


@pytest.mark.parametrize("C, low, high", [(1, -0.40, -0.22), (4, -0.30, -0.10)])
def test_untrained_networks_with_the_author_encoding_are_as_contracting_as_the_authors(C, low, high):
    """Median lambda_1 at g = 1, N = 80 with task inputs: about -0.32 (1 channel) and -0.21 (4 channels) with the
    author's encoding, against -0.47 and -0.74 with +-1 bits and no 1/C (PAPER.md)."""
    from floss_core import ModelConfig, lyapunov_spectrum

    medians = {}
    for kind in ("author", "pm1"):
        g = _gen(11)
        model = ModelConfig().build(C, C, n_networks=16, generator=g)
        task = TaskConfig(name="copy", delay=1, seq_len=600, batch=2, n_channels=C, encoding=InputEncoding(kind))
        with torch.no_grad():
            medians[kind] = float(lyapunov_spectrum(model, task.sample(16, g).inputs, 1, generator=g)[:, 0].median())
    assert low < medians["author"] < high
    assert medians["pm1"] < medians["author"] - 0.1
