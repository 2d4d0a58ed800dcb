"""Wall times quoted in the README and the issue notes (2-core CPU; run on a quiet machine).

    python benchmarks/timings.py [--threads 2] [--device cpu]

* one forward+backward of ``lyapunov_spectrum`` at N = 80, k = 75, T = 300, for E = 1 and E = 32 networks,
  float32 and float64 (per call and per network);
* 100 training steps (N = 80, batch 16, T = 300) for E = 1 and E = 32;
* 100 flossing steps with the paper's defaults (k = 75, T = 55, batch 1) for E = 1 and E = 32.
Median of ``--repeats`` runs.
"""
import argparse
import statistics
import time

import torch

from floss_core import FlossConfig, FlossSchedule, ModelConfig, TaskConfig, TrainConfig, floss, lyapunov_spectrum, train


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    print(f"threads={args.threads} device={dev} torch={torch.__version__}")
    print("\n| spectrum fwd+bwd (N=80, k=75, T=300) | E | dtype | s per call | s per network |\n|---|---|---|---|---|")
    for E in (1, 32):
        for dtype in ("float32", "float64"):
            m = ModelConfig(n_hidden=80, gain=1.0, dtype=dtype).build(1, 1, n_networks=E, device=dev,
                                                                    generator=torch.Generator().manual_seed(0))
            g = torch.Generator().manual_seed(1)
            x = (2 * torch.randint(0, 2, (E, 1, 300, 1), generator=g) - 1).to(m.W)

            def run():
                lam = lyapunov_spectrum(m, x, 75, generator=g)
                lam.pow(2).mean(-1).sum().backward()

            t = timed(run, args.repeats)
            print(f"| | {E} | {dtype} | {t:.3f} | {t / E:.4f} |")
    print("\n| 100 steps (N=80) | E | s total | s per network |\n|---|---|---|---|")
    for E in (1, 32):
        m = ModelConfig(n_hidden=80).build(1, 1, n_networks=E, device=dev, generator=torch.Generator().manual_seed(0))
        t = timed(lambda: train(m, TaskConfig(name="copy", delay=20, seq_len=300, batch=16),
                                config=TrainConfig(n_steps=100, record_every=0), schedule=FlossSchedule.none(),
                                generator=torch.Generator().manual_seed(1), progress=False), 1)
        print(f"| training, batch 16, T=300 | {E} | {t:.2f} | {t / E:.3f} |")
        t = timed(lambda: floss(m, 100, config=FlossConfig(), generator=torch.Generator().manual_seed(2)), 1)
        print(f"| flossing, paper defaults (k=75, T=55, batch 1) | {E} | {t:.2f} | {t / E:.3f} |")


if __name__ == "__main__":
    main()
