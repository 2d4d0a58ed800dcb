"""Timing helpers shared by the benchmark scripts (imported as ``_timing``: the scripts run from this folder)."""
import os
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


def busy_seconds() -> float:
    """CPU seconds all processes have used (all cores, from /proc/stat); NaN where that is not available."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
