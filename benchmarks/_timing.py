"""Timing helpers shared by the benchmark scripts (imported as ``_timing``: the scripts run from this folder)."""
import time

import torch


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    """Run fn() once: (wall seconds, CPU seconds of this process)."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0
