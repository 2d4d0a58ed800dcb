"""The computation behind each figure, one sweep per module: its config (a frozen dataclass of the package's configs,
validated when built) and the function that runs it as shards of batched ensembles.

    flossing_sweep      figures 1 and 2: exponents during flossing from several gains, for several k and targets
                        (a gradient mode per gain), spectra, gradient-norm profiles and long-term-Jacobian singular
                        values before and after.
    delay_sweep         figures 3 and 4: training on delayed tasks over a grid of delays, for no flossing,
                        flossing before training, and flossing before and during training.
    gated_sweep         figure 6: preflossing LSTMs and GRUs over k and the memory-gate bias initialization, with
                        gate statistics before and after preflossing.
    error_bar_sweep     notebook 08: standard errors of the exponents, steps to a target error and the angles of
                        the covariant vectors, before and after flossing.
    complexity_sweep    figure 5: final accuracy vs the number of flossed exponents k for the hierarchical temporal
                        XOR of increasing level (and, optionally, the XOR across C channels).
    summary             success, steps to criterion and final accuracy of a delay sweep.
    sharding            how a sweep runs as shards of networks, in this process or on a Dask cluster (``cluster=``),
                        with the same numbers (``sharding.ShardError`` names a failed shard); every network draws from
                        generators of its own (``common``).

``build(DelaySweep, train={"n_steps": 1500}, ...)`` makes a sweep from a notebook's plain parameters.
"""
from ..diagnostics import final_accuracy, running_mean
from .common import build
from .complexity_sweep import ComplexitySweep, complexity_outcome, complexity_sweep
from .delay_sweep import CONDITIONS, DelaySweep, delay_sweep
from .error_bar_sweep import ErrorBarSweep, error_bar_sweep
from .flossing_sweep import FlossingSweep, flossing_sweep
from .gated_sweep import GatedSweep, gated_sweep, summarize_gated_sweep
from .summary import summarize_delay_sweep

__all__ = ["build", "FlossingSweep", "flossing_sweep", "DelaySweep", "delay_sweep", "CONDITIONS", "ComplexitySweep",
           "complexity_sweep", "complexity_outcome", "summarize_delay_sweep", "GatedSweep", "gated_sweep",
           "summarize_gated_sweep", "final_accuracy", "running_mean", "ErrorBarSweep", "error_bar_sweep"]
