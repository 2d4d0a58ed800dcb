"""Recurrent cells as ensembles of E independent networks: the protocol every model follows, the shared ensemble
base, the paper's tanh RNN, LSTM and GRU, and torch.nn modules wrapped in the protocol."""
from .adapters import TorchCell, from_torch
from .base import EnsembleRNN
from .config import CELLS, ModelConfig
from .gated import GRU, LSTM
from .protocol import Cell, TangentCell, TrainableCell, unroll
from .tanh import TanhRNN

__all__ = ["Cell", "TangentCell", "TrainableCell", "EnsembleRNN", "TanhRNN", "LSTM", "GRU", "TorchCell", "from_torch",
           "ModelConfig", "CELLS", "unroll"]
