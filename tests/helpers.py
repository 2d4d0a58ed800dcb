"""Shared test helpers: one factory per model, so one parametrized test covers every cell of the package."""
import torch

from floss_core import TanhRNN
from floss_core.cells import GRU, LSTM

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tanh_rnn(n_in, n_hidden, n_out, n_networks=1, generator=None, dtype=F64, gain=1.0):
    return TanhRNN(n_in, n_hidden, n_out, gain=gain, n_networks=n_networks, generator=generator, dtype=dtype)


def _lstm(n_in, n_hidden, n_out, n_networks=1, generator=None, dtype=F64, gain=1.0):
    return LSTM(n_in, n_hidden, n_out, gain=gain, n_networks=n_networks, generator=generator, dtype=dtype)


def _gru(n_in, n_hidden, n_out, n_networks=1, generator=None, dtype=F64, gain=1.0):
    return GRU(n_in, n_hidden, n_out, gain=gain, n_networks=n_networks, generator=generator, dtype=dtype)


# (name, factory(n_in, n_hidden, n_out, n_networks, generator, dtype, gain=...) -> model)
ALL_CELLS = (("TanhRNN", _tanh_rnn), ("LSTM", _lstm), ("GRU", _gru))
GATED_CELLS = tuple(c for c in ALL_CELLS if c[0] != "TanhRNN")


def cell_ids(cells):
    return [name for name, _ in cells]


def copy_network(src, dst, e):
    """Copy network e of ensemble ``src`` into the 1-network model ``dst`` (same class and sizes)."""
    with torch.no_grad():
        for name, p in dst.named_parameters():
            p.copy_(getattr(src, name)[e:e + 1])
    return dst


class OnlyStep(torch.nn.Module):
    """A user cell that provides only `step` (no Jacobian): the same dynamics as the TanhRNN it wraps, so the
    torch.func path (and the fast engine's fallback) can be compared with the analytic one."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.n_networks, self.state_size, self.input_size = rnn.n_networks, rnn.state_size, rnn.input_size

    def step(self, h, x):
        return torch.tanh(h) @ self.rnn.W.transpose(1, 2) + self.rnn.b.unsqueeze(1) + x @ self.rnn.U.transpose(1, 2)

    def initial_state(self, batch, generator=None):
        return self.rnn.initial_state(batch, generator)


def saved_bytes(fn):
    """Bytes of the distinct storages autograd holds between fn()'s forward and its backward (which still runs)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(storages.values())


class Linear(torch.nn.Module):
    """h' = A h (E networks): exponents log|eigenvalues of A| on every trajectory, no statistical error; a cell of the
    protocol without step_tangent (Jacobian-vector products)."""

    def __init__(self, A):
        super().__init__()
        self.A = torch.nn.Parameter(A)
        self.n_networks, self.state_size, self.input_size = A.shape[0], A.shape[1], 1

    def step(self, h, x):
        return torch.einsum("eij,ebj->ebi", self.A, h)

    def initial_state(self, batch, generator=None):
        return torch.randn(self.n_networks, batch, self.state_size, generator=generator, dtype=self.A.dtype)
