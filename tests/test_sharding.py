"""The figure sweeps sharded over a Dask cluster give the in-process numbers, bit for bit, also when a worker dies;
failures name their shard or their scheduler; ``./run_all.sh --cluster`` hands the cluster to the notebooks.

The clusters are LocalClusters of two single-threaded worker processes; the in-process runs use one torch thread
too (the same threads per shard). Every cluster is closed by a ``with`` block, also when a test fails.
"""
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

distributed = pytest.importorskip("distributed")
import cloudpickle

from floss_core.experiments import (
    ComplexitySweep,
    DelaySweep,
    FlossingSweep,
    build,
    complexity_sweep,
    delay_sweep,
    flossing_sweep,
)
from floss_core.experiments import sharding
from floss_core.experiments.sharding import ShardError
from floss_core.repro.faults import KillOnce

pytestmark = pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")  # the scheduler's HTTP

N = 8  # hidden units of every network here
SWEEPS = {  # tiny sweeps of several shards each
    "flossing": (flossing_sweep, build(
        FlossingSweep, gains=[0.5, 1.0, 2.0], gradients=["full", "detached", "full"], ks=[1, 3], targets=[0.0, -0.5],
        target_ks=[1], n_networks=2, floss_steps=3, model={"n_hidden": N}, floss={"seq_len": 12, "n_transient": 3},
        spectrum_k=4, spectrum_steps=30, horizon=10, sv_every=2, sv_gains=[1.0], shard_size=3)),  # modes mix in shards
    "delay": (delay_sweep, build(
        DelaySweep, delays=[2, 4], n_networks=3, model={"n_hidden": N}, train={"n_steps": 6, "record_every": 3},
        batch=4, seq_len=10, floss={"k": 3, "seq_len": 12, "n_transient": 3},
        schedule={"pre_steps": 2, "every": 2, "episode_steps": 2, "max_episodes": 1}, shard_size=2)),
    "complexity": (complexity_sweep, build(
        ComplexitySweep, levels=[1, 2], author_delay=2, channel_xor=[2], channel_delay=2, ks=[0, 1, 3], n_networks=2,
        model={"n_hidden": N}, train={"n_steps": 4}, batch=4, seq_len=10, pre_steps=2, shard_size=4)),
}


@contextlib.contextmanager
def local_cluster():
    """A LocalCluster of 2 single-threaded worker processes and a client (not the default one: the sweeps must not
    need one), both closed on the way out."""
    with sharding.local_cluster(2, dashboard_address=None, silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def client():
    with local_cluster() as client:
        yield client


@contextlib.contextmanager
def threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def in_process(kind, sweep=None):
    fn, default = SWEEPS[kind]
    with threads(1):  # as on the workers
        return fn(sweep or default, progress=False)


def assert_bit_identical(a, b, path="result"):
    """Every tensor equal bit for bit (NaN where the other has NaN), everything else equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_bit_identical(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_a_sharded_sweep_is_bit_identical_to_the_in_process_run(client, kind):
    fn, sweep = SWEEPS[kind]
    sharded = fn(sweep, progress=False, cluster=client)
    assert_bit_identical(in_process(kind), sharded)


def test_a_scheduler_address_works_like_a_client(client):
    fn, sweep = SWEEPS["complexity"]
    assert_bit_identical(in_process("complexity"), fn(sweep, progress=False, cluster=client.scheduler.address))


def test_a_worker_killed_during_a_sweep_loses_nothing(tmp_path):
    fn, small = SWEEPS["delay"]
    sweep = dataclasses.replace(small, tasks=("copy",), conditions=("none", "pre+during"), shard_size=3,
                                train=dataclasses.replace(small.train, n_steps=120))  # 4 training shards of ~0.3 s
    marker = tmp_path / "killed"
    with local_cluster() as client:
        workers = set(client.scheduler_info()["workers"])
        # the first training shard to start kills its worker 0.05 s later, in the middle of that shard
        client.register_plugin(KillOnce(marker, prefix="delay_sweep-shard", delay=0.05))
        sharded = fn(sweep, progress=False, cluster=client)
        victim = KillOnce.victim(marker)
        assert victim is not None and victim[1].startswith("delay_sweep-shard-"), victim
        assert set(client.scheduler_info()["workers"]) != workers  # the nanny replaced the dead worker
    assert_bit_identical(in_process("delay", sweep), sharded)


def test_local_cluster_workers_run_without_the_malloc_setting_that_slows_the_engines(client, monkeypatch):
    assert sharding.slow_workers(client) == []
    assert len(client.nthreads()) == 2 and set(client.nthreads().values()) == {1}
    monkeypatch.setattr(sharding, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fn, sweep = SWEEPS["complexity"]
        fn(sweep, progress=False, cluster=client)  # no warning


def test_a_sweep_on_workers_with_the_slow_malloc_setting_warns_once_naming_it(monkeypatch):
    monkeypatch.setattr(sharding, "_WARNED", set())
    for name in ("MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED"):  # Dask's nanny writes them into os.environ: undone
        monkeypatch.delenv(name, raising=False)
    fn, sweep = SWEEPS["complexity"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:  # Dask's default worker environment
        assert len(sharding.slow_workers(client)) == 1
        with pytest.warns(RuntimeWarning, match="1 of 1 Dask worker.*MALLOC_TRIM_THRESHOLD_.*local_cluster"):
            first = fn(sweep, progress=False, cluster=client)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert_bit_identical(first, fn(sweep, progress=False, cluster=client))  # warned once; same numbers


def test_local_cluster_rejects_a_bad_worker_count_and_asynchronous_start():
    with pytest.raises(ValueError, match="n_workers must be an int >= 1.*got 0"):
        sharding.local_cluster(0)
    with pytest.raises(ValueError, match="asynchronous=True"):
        sharding.local_cluster(1, asynchronous=True)


def test_worker_environment_keeps_dasks_config_when_distributed_is_first_imported_inside_it():
    """In a fresh process: importing dask.distributed (and so its config defaults) first within the block must not
    make the block remove the whole "distributed" config section on the way out; the variable is back afterwards."""
    code = textwrap.dedent("""
        import os
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "123"
        import dask
        from floss_core.experiments import sharding
        with sharding.worker_environment():
            assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
            import distributed  # noqa: F401
            assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") is None
        assert dask.config.get("distributed.comm.timeouts.connect")
        assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == 65536
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "123"
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_open_cluster_names_what_it_takes_for_none():
    from floss_core.repro.cluster import check_cluster_spec
    from floss_core.repro.settings import UsageError

    with pytest.raises(UsageError, match="'none' means no cluster"):
        check_cluster_spec("none")
    with pytest.raises(UsageError, match="'local', 'none' or a scheduler address.*got 'nowhere'"):
        check_cluster_spec("nowhere")


def test_an_unreachable_scheduler_raises_naming_its_address():
    fn, sweep = SWEEPS["complexity"]
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=f"cannot reach the Dask scheduler at {address}"):
        fn(sweep, progress=False, cluster=address)


def _fail_delay_4():
    """On a worker: the delay sweep's training raises for networks of delay 4."""
    import importlib

    module = importlib.import_module("floss_core.experiments.delay_sweep")

    def train(model, tasks, **kwargs):
        if any(task.delay == 4 for task in tasks):
            raise RuntimeError("injected failure")
        return original(model, tasks, **kwargs)

    original = getattr(module.train, "original", module.train)
    train.original = original
    module.train = train


def test_a_shard_that_raises_names_its_networks():
    fn, small = SWEEPS["delay"]
    # networks: copy at d = 2 (0-1) and d = 4 (2-3), no flossing; shards of 2: only the second one fails
    sweep = dataclasses.replace(small, tasks=("copy",), conditions=("none",), n_networks=2, shard_size=2)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with local_cluster() as client:
            client.run(_fail_delay_4)
            with pytest.raises(ShardError, match="^shard of networks 2-3 of delay_sweep failed: RuntimeError: "
                                                 "injected failure$"):
                fn(sweep, progress=False, cluster=client)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_in_process_sweeps_import_no_dask(tmp_path):
    (tmp_path / "sweeps.pkl").write_bytes(pickle.dumps({kind: sweep for kind, (_, sweep) in SWEEPS.items()}))
    code = textwrap.dedent("""
        import pickle, sys
        sys.modules["dask"] = sys.modules["distributed"] = None  # importing either now fails
        from floss_core import experiments
        for kind, sweep in pickle.loads(open(sys.argv[1], "rb").read()).items():
            getattr(experiments, kind + "_sweep")(sweep, progress=False)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sweeps.pkl")], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert out.returncode == 0, out.stderr


# -- ./run_all.sh --cluster ------------------------------------------------------------------------------------------

CLUSTER_BODY = """\
import json, os
from distributed import Client
with Client(cluster) as client:
    workers = len(client.nthreads())
open(os.path.join(os.environ["FLOSS_FIG_DIR"], "cluster.json"), "w").write(json.dumps([cluster, workers]))
"""


def run(project, *args, **env):
    """The runner in-process on ``project`` (test_runner's helper; skipped without papermill)."""
    return pytest.importorskip("test_runner").run(project, *args, **env)


@pytest.fixture
def cluster_project(tmp_path):
    """Two notebooks, one declaring `cluster`."""
    write_notebook = pytest.importorskip("test_runner").write_notebook
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_sharded.ipynb", CLUSTER_BODY, parameters="quick = False\ncluster = None")
    write_notebook(notebooks / "02_plain.ipynb", "x = 1", parameters="quick = False")
    (notebooks / "quick_params.yaml").write_text("_all:\n  quick: true\n01_sharded: {}\n02_plain: {}\n")
    return tmp_path


def test_run_all_cluster_local_hands_its_scheduler_address_to_the_notebooks(cluster_project):
    out = run(cluster_project, "01", "--cluster", "local", FLOSS_THREADS="2")
    assert out.rc == 0, out.log
    assert "run_all.sh: Dask scheduler tcp://" in out.out and "2 worker(s)" in out.out and "dashboard http" in out.out
    address, workers = json.loads((cluster_project / "figures" / "cluster.json").read_text())
    assert address.startswith("tcp://127.0.0.1:") and f"Dask cluster {address}" in out.out and workers == 2


def test_run_all_cluster_is_passed_to_notebooks_that_declare_it_and_warns_for_the_others(cluster_project):
    out = run(cluster_project, "--list", "--cluster", "tcp://scheduler.example:8786")
    assert out.rc == 0, out.log
    assert "    cluster: \"tcp://scheduler.example:8786\"   (--cluster; default None)" in out.out, out.out
    out = run(cluster_project, "--list", "--quick", "--cluster", "local")
    assert "02_plain.ipynb declares no 'cluster' parameter; --cluster local ignored" in out.log, out.log


def test_run_all_at_paper_scale_on_two_threads_uses_a_local_cluster_by_default(cluster_project):
    out = run(cluster_project, "01", FLOSS_THREADS="2")
    assert out.rc == 0, out.log
    address, workers = json.loads((cluster_project / "figures" / "cluster.json").read_text())
    assert address.startswith("tcp://127.0.0.1:") and f"Dask cluster {address}" in out.out and workers == 2
    assert "--cluster none runs every sweep in its notebook's kernel" in out.out, out.out


def test_run_all_runs_in_the_kernels_with_a_warning_when_the_default_cluster_cannot_start(tmp_path, monkeypatch):
    import floss_core.repro.runner as runner

    def no_cluster(spec, *, n_workers):
        raise OSError("no sockets here")

    monkeypatch.setattr(runner, "open_cluster", no_cluster)
    write_notebook = pytest.importorskip("test_runner").write_notebook
    (tmp_path / "notebooks").mkdir()
    body = 'import os\nopen(os.path.join(os.environ["FLOSS_FIG_DIR"], "cluster.txt"), "w").write(repr(cluster))'
    write_notebook(tmp_path / "notebooks" / "01_sharded.ipynb", body, parameters="quick = False\ncluster = None")
    (tmp_path / "notebooks" / "quick_params.yaml").write_text("_all:\n  quick: true\n01_sharded: {}\n")
    out = run(tmp_path, "01", FLOSS_THREADS="2")
    assert out.rc == 0, out.log
    assert "the default local Dask cluster did not start (OSError: no sockets here)" in out.err, out.log
    assert (tmp_path / "figures" / "cluster.txt").read_text() == "None"  # the notebook's own default
    out = run(tmp_path, "01", "--cluster", "local", FLOSS_THREADS="2")  # asked for: no fallback, exit 2
    assert out.rc == 2 and "--cluster local: the cluster did not start (OSError: no sockets here)" in out.err, out.log


def test_run_all_default_cluster_only_at_paper_scale_on_several_cpu_threads_and_none_turns_it_off(cluster_project):
    def listed(*args, **env):
        out = run(cluster_project, "--list", "01", *args, **env)
        assert out.rc == 0, out.log
        return next(line.strip() for line in out.out.splitlines() if line.strip().startswith("cluster:"))

    assert listed(FLOSS_THREADS="2").startswith('cluster: "local"   (paper scale on a multi-core CPU')
    assert listed("--cluster", "none", FLOSS_THREADS="2") == "cluster: None"
    assert listed(FLOSS_THREADS="1") == "cluster: None"
    assert listed("--quick", FLOSS_THREADS="2") == "cluster: None"
    assert listed("--device", "cuda", FLOSS_THREADS="2") == "cluster: None"
    out = run(cluster_project, "--list", FLOSS_THREADS="2")  # the default warns for no notebook
    assert "declares no 'cluster' parameter" not in out.log, out.log


def test_run_all_with_an_unreachable_scheduler_exits_2_before_any_notebook_runs(cluster_project):
    address = f"tcp://127.0.0.1:{free_port()}"
    out = run(cluster_project, "--cluster", address)
    assert out.rc == 2 and f"cannot reach the Dask scheduler at {address}" in out.err, out.log
    assert "[1/" not in out.out and not (cluster_project / "figures").exists()
    assert run(cluster_project, "--cluster", "somewhere").rc == 2  # not an address: a usage error too


def test_run_all_cluster_refuses_workers_that_import_other_floss_core_code():
    from floss_core.repro.cluster import _check_code
    from floss_core.repro.settings import UsageError

    class Workers:  # a client whose one worker imports another checkout
        def run(self, fn):
            return {"tcp://10.0.0.7:4001": ("0123456789abcdef", "/elsewhere/floss_core")}

    with pytest.raises(UsageError, match="tcp://10.0.0.7:4001 imports /elsewhere/floss_core"):
        _check_code(Workers())
