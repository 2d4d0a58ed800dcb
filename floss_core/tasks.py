"""Binary delayed-memory tasks (delayed copy, delayed XOR, delayed parity, XOR across channels), sampled on the fly
for an ensemble.

Every trajectory is a stream of i.i.d. Bernoulli(1/2) bits ``b_t in {0, 1}``, one stream per input channel, and the
network sees them through an ``InputEncoding``:

    "author"   s_t = amplitude * b_t / C      (the author's code: bits in {0, 1} times I1, the input drive divided by
                                              the number C of input channels; the default)
    "pm1"      s_t = amplitude * (2 b_t - 1)  (zero-mean +-1 bits, what this package used first)

For the same weights the two are different networks: with 4 channels, +-1 bits make an untrained g = 1 network far
more contracting (median lambda_1 -0.74 against -0.21 at N = 80).

The network has to report, at every step, the parity of m past bits of the same channel:

    y_t = b_{t - d/m}  XOR  b_{t - 2d/m}  XOR ...  XOR  b_{t - d}          (targets in {0., 1.})

Delay convention: **d is the LONGEST lag**, and the m lags are evenly spaced, d/m, 2d/m, ..., d (so m must divide d).

    task       m      target
    "copy"     1      y_t = b_{t-d}                       (delayed copy)
    "xor"      2      y_t = b_{t-d/2} XOR b_{t-d}         (delayed XOR)
    "parity"   n_bits y_t = XOR of the m bits above        (delayed m-bit parity)

The author's *hierarchical temporal XOR* of level h (task = -h in the author's code) is the parity of the 2^h bits
at lags delay, 2 delay, ..., 2^h delay: ``TaskConfig.hierarchical_xor(h, delay)`` makes it (m = 2^h, d = 2^h delay).
"channel_xor" is a multi-dimensional task: C input channels and ONE target, the XOR of the C bits of step t - d,
``y_t = b^1_{t-d} XOR ... XOR b^C_{t-d}``.

The author's Julia code names the task by the lag *spacing* d/m instead: its "delay" of the XOR task is d/2 (and of
the copy task, d). ``delay_from_author`` converts that number to the d used here.

Time is 0-based. The target is defined only once its longest lag exists, i.e. for ``t >= d``; the ``mask`` is 1
there and 0 exactly for ``t < d``, and the (undefined) targets at masked steps are set to 0. Training code applies a
binary cross-entropy on a logit, weighted by the mask; that is not done here.

Multi-channel tasks: with ``n_channels = C`` there are C independent bit streams; "copy", "xor" and "parity" give
each channel its own independent task (channel c of the target depends only on channel c of the input), "channel_xor"
one target across them. Shapes (O = C, or 1 for "channel_xor"):

    E  networks        B  trajectories (batch) per network     T  time steps (seq_len)     C  channels
    inputs (E, B, T, C) floating; targets, mask (E, B, T, O) floating;  bits (E, B, T, C) int64

All randomness comes from an explicit ``torch.Generator`` (no global seeding): the same generator state gives the
same batch. The bits are drawn on the generator's device and then moved to ``device``, so a CPU generator gives the
same batch on any device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_choice, check_dtype, check_int, check_number
from .rng import check_generator, draw

__all__ = ["TASKS", "TaskBatch", "TaskConfig", "InputEncoding", "make_batch", "task_n_bits", "delay_from_author",
           "random_bits", "bit_signal"]

TASKS = ("copy", "xor", "parity", "channel_xor")
_FIXED_BITS = {"copy": 1, "xor": 2, "channel_xor": 1}  # m of the tasks whose number of bits is implied by the name
ENCODINGS = ("author", "pm1")


@dataclass(frozen=True)
class InputEncoding:
    """How the networks see the bits (module docstring): "author" (b * amplitude / C) or "pm1" ((2b - 1) * amplitude).
    Tasks and flossing inputs share it, so that flossing sees the task's input statistics."""
    kind: str = "author"
    amplitude: float = 1.0  # the author's I1

    def __post_init__(self):
        check_choice("InputEncoding.kind", self.kind, ENCODINGS)
        check_number("InputEncoding.amplitude", self.amplitude, 0, low_open=True)


def random_bits(n_networks: int, *shape: int, generator=None, device=None) -> torch.Tensor:
    """I.i.d. Bernoulli(1/2) bits in {0, 1}, int64, shape (n_networks, *shape): the one bit sampler of the package
    (task batches, flossing inputs, experiment drives). Drawn on the generator's device and moved to ``device``;
    ``generator`` may be a list of one per network (``floss_core.rng``)."""

    def one(n, g):
        src = g.device if g is not None else device
        return torch.randint(0, 2, (n, *shape), generator=g, device=src, dtype=torch.int64).to(device)

    return draw(one, generator, n_networks)


def bit_signal(bits: torch.Tensor, encoding: InputEncoding | None = None, dtype=None, device=None) -> torch.Tensor:
    """The signal the networks see for bits b (..., C) in {0, 1} (see ``InputEncoding``), as ``dtype`` on ``device``."""
    encoding = InputEncoding() if encoding is None else encoding
    if encoding.kind == "pm1":
        s = (2 * bits - 1).to(dtype=dtype, device=device)
    else:
        s = bits.to(dtype=dtype, device=device) / bits.shape[-1]
    return s if encoding.amplitude == 1 else s * encoding.amplitude


def _check_task(name) -> str:
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks are {', '.join(map(repr, TASKS))}")
    return name


def task_n_bits(name: str, n_bits: int | None = None) -> int:
    """The number m of bits whose parity is the target: 1 for "copy", 2 for "xor", ``n_bits`` for "parity".

    ``n_bits`` is required for "parity" and optional for "copy"/"xor", where it must then agree with the name.
    """
    _check_task(name)
    if n_bits is not None:
        n_bits = check_int("n_bits", n_bits, 1)
    if name in _FIXED_BITS:
        m = _FIXED_BITS[name]
        if n_bits is not None and n_bits != m:
            raise ValueError(f"n_bits={n_bits} disagrees with task {name!r}, which has n_bits={m}")
        return m
    if n_bits is None:
        raise ValueError("task 'parity' requires n_bits (the number m >= 1 of bits in the parity)")
    return n_bits


def delay_from_author(task: str, author_delay: int, *, n_bits: int | None = None) -> int:
    """The longest lag d (this package's ``delay``) from the "delay" of the author's Julia code.

    The author's delay is the spacing d/m between the lags: d = author_delay for "copy", d = 2 * author_delay for
    "xor" (whose lags are author_delay and 2 * author_delay), and, extending the same convention,
    d = n_bits * author_delay for "parity".
    """
    m = task_n_bits(task, n_bits)
    return m * check_int("author_delay", author_delay, 1)


def _check_delay(delay, seq_len, m: int) -> tuple[int, int]:
    delay = check_int("delay", delay, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    if delay >= seq_len:
        raise ValueError(f"delay={delay} must be smaller than seq_len={seq_len}: the target is defined only for "
                         f"t >= delay, so no step would have a target")
    if delay % m:
        raise ValueError(f"delay={delay} must be a multiple of the number of bits m={m} (lags d/m, 2d/m, ..., d)")
    return delay, seq_len


@dataclass(frozen=True)
class TaskBatch:
    """One sampled batch for an ensemble of E networks (see the module docstring for the task).

    inputs:  (E, B, T, C) the encoded bits fed to the networks (``InputEncoding``).
    targets: (E, B, T, O) the parity y_t in {0., 1.}; 0 where the mask is 0 (O = C, or 1 for "channel_xor").
    mask:    (E, B, T, O) 1 where the target is defined (t >= delay), 0 for t < delay; dtype of inputs.
    bits:    (E, B, T, C) int64, the raw bits b in {0, 1}.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    bits: torch.Tensor


def make_batch(task: str, *, delay: int, seq_len: int, batch: int, n_networks: int = 1, n_channels: int = 1,
               n_bits: int | None = None, encoding: InputEncoding | None = None, generator=None,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> TaskBatch:
    """Sample a batch of a delayed copy / XOR / parity / channel-XOR task for ``n_networks`` networks at once.

    Arguments:
        task: "copy" (m = 1), "xor" (m = 2), "parity" (m = n_bits) or "channel_xor" (m = 1, one target).
        delay: d, the longest lag in steps; m must divide it, and d < seq_len.
        seq_len: T, steps per trajectory.
        batch: B, trajectories per network.
        n_networks: E, networks (each gets its own independent trajectories).
        n_channels: C, independent input channels, each with its own parity task (or one XOR across them).
        n_bits: m; required for "parity", optional (must agree) for the others.
        encoding: how the networks see the bits (default ``InputEncoding()``, the author's).
        generator: the torch.Generator all bits are drawn from (same state, same batch), or one per network.
        dtype: floating dtype of inputs, targets and mask (default: torch's default dtype).
        device: of the returned tensors.
    """
    m = task_n_bits(task, n_bits)
    d, T = _check_delay(delay, seq_len, m)
    B = check_int("batch", batch, 1)
    E = check_int("n_networks", n_networks, 1)
    C = check_int("n_channels", n_channels, 1)
    check_generator(generator, E)
    dtype = check_dtype("dtype", dtype)
    if task == "channel_xor" and C < 2:
        raise ValueError(f"task 'channel_xor' needs n_channels >= 2 (the XOR of the channels), got {C}")
    bits = random_bits(E, B, T, C, generator=generator, device=device)  # (E, B, T, C)

    parity = torch.zeros(E, B, T - d, C, dtype=torch.int64, device=bits.device)  # (E, B, T - d, C), steps t >= d
    for k in range(1, m + 1):
        lag = k * d // m
        parity ^= bits[:, :, d - lag:T - lag]  # b_{t - lag} for t = d, ..., T - 1
    if task == "channel_xor":
        parity = parity.sum(-1, keepdim=True) % 2  # (E, B, T - d, 1): XOR across the channels
    O = parity.shape[-1]
    targets = torch.zeros(E, B, T, O, dtype=dtype, device=bits.device)  # (E, B, T, O)
    targets[:, :, d:] = parity.to(dtype)
    mask = torch.zeros(E, B, T, O, dtype=dtype, device=bits.device)  # (E, B, T, O)
    mask[:, :, d:] = 1
    inputs = bit_signal(bits, encoding, dtype)  # (E, B, T, C)
    return TaskBatch(inputs=inputs, targets=targets, mask=mask, bits=bits)


@dataclass(frozen=True)
class TaskConfig:
    """A task specification; ``sample`` draws a fresh batch from it. Defaults: the author's training runs
    (batch 16, sequence length 300)."""

    name: str = "xor"  # one of TASKS: "copy", "xor", "parity" or "channel_xor"
    delay: int = 20  # d, the longest lag, in time steps (the author's XOR "delay" is d / 2)
    seq_len: int = 300  # T, time steps per trajectory
    batch: int = 16  # B, trajectories per network per batch
    n_channels: int = 1  # C, input channels (each its own task; "channel_xor": one target across them)
    n_bits: int | None = None  # m, bits in the parity; required for "parity", implied by the other names
    encoding: InputEncoding = InputEncoding()  # how the networks see the bits (the author's: b * I1 / C)

    def __post_init__(self):
        _check_delay(self.delay, self.seq_len, task_n_bits(self.name, self.n_bits))
        check_int("batch", self.batch, 1)
        check_int("n_channels", self.n_channels, 2 if self.name == "channel_xor" else 1)
        if not isinstance(self.encoding, InputEncoding):
            raise ValueError(f"encoding must be an InputEncoding, got {self.encoding!r}")

    @classmethod
    def hierarchical_xor(cls, level: int, author_delay: int, **kwargs) -> "TaskConfig":
        """The author's hierarchical temporal XOR of level h (task = -h): the parity of the 2^h bits at lags
        author_delay, 2 author_delay, ..., 2^h author_delay (h = 1 is the delayed XOR)."""
        m = 2 ** check_int("level", level, 1)
        return cls(name="parity", n_bits=m, delay=m * check_int("author_delay", author_delay, 1), **kwargs)

    @property
    def n_inputs(self) -> int:
        return self.n_channels

    @property
    def n_outputs(self) -> int:
        """Target channels: one per input channel, or one for "channel_xor"."""
        return 1 if self.name == "channel_xor" else self.n_channels

    @property
    def m(self) -> int:
        """The number of bits in the parity (1 for copy, 2 for xor)."""
        return task_n_bits(self.name, self.n_bits)

    def sample(self, n_networks: int = 1, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> TaskBatch:
        """A batch for ``n_networks`` networks: (n_networks, batch, seq_len, channels) tensors."""
        return make_batch(self.name, delay=self.delay, seq_len=self.seq_len, batch=self.batch,
                          n_networks=n_networks, n_channels=self.n_channels, n_bits=self.n_bits,
                          encoding=self.encoding, generator=generator, dtype=dtype, device=device)
