"""floss_core.repro.cache: results are computed once per (name, params, code version) and survive bad files."""
import json
from dataclasses import dataclass

import pytest
import torch

from floss_core.repro import cache
from floss_core.repro.cache import cached


class Counter:
    """A compute function that counts its calls and returns a new tensor each time."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"x": torch.arange(3.0) * self.calls, "calls": self.calls, "tags": ["a", "b"], "nested": {"y": 1.5}}


def test_second_call_loads_instead_of_recomputing(tmp_path):
    compute = Counter()
    first = cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    second = cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    assert compute.calls == 1
    assert torch.equal(first["x"], second["x"]) and second["calls"] == 1
    assert second["tags"] == ["a", "b"] and second["nested"] == {"y": 1.5}


def test_parameter_order_does_not_matter(tmp_path):
    compute = Counter()
    cached("demo", {"a": 1, "b": [1, 2]}, compute, cache_dir=tmp_path)
    cached("demo", {"b": [1, 2], "a": 1}, compute, cache_dir=tmp_path)
    assert compute.calls == 1


def test_changed_params_or_name_recompute(tmp_path):
    compute = Counter()
    cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    cached("demo", {"n": 4}, compute, cache_dir=tmp_path)
    cached("other", {"n": 3}, compute, cache_dir=tmp_path)
    assert compute.calls == 3
    assert cached("demo", {"n": 4}, compute, cache_dir=tmp_path)["calls"] == 2


def test_refresh_recomputes_and_overwrites(tmp_path):
    compute = Counter()
    cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    assert cached("demo", {"n": 3}, compute, cache_dir=tmp_path, refresh=True)["calls"] == 2
    assert cached("demo", {"n": 3}, compute, cache_dir=tmp_path)["calls"] == 2
    assert compute.calls == 2


@pytest.mark.parametrize("content", [b"", b"not a torch file", None], ids=["empty", "garbage", "truncated"])
def test_corrupt_file_recomputes_with_a_warning(tmp_path, content):
    compute = Counter()
    cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    (path,) = tmp_path.glob("demo-*.pt")
    path.write_bytes(path.read_bytes()[:20] if content is None else content)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    assert compute.calls == 2 and again["calls"] == 2
    assert cached("demo", {"n": 3}, compute, cache_dir=tmp_path)["calls"] == 2  # the rewritten file is good


def test_code_version_is_part_of_the_key(tmp_path, monkeypatch):
    compute = Counter()
    cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    monkeypatch.setattr(cache, "code_version", lambda: "edited-library")
    cached("demo", {"n": 3}, compute, cache_dir=tmp_path)
    assert compute.calls == 2


def test_code_version_hashes_the_computing_source_files_only(tmp_path):
    """Every *.py counts but repro/ (caching, plotting, running) and hidden directories (checkpoint copies)."""
    from floss_core._source import source_hash

    pkg = tmp_path / "pkg"
    for sub in ("sub", "repro", ".ipynb_checkpoints"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code\n")
    v0 = source_hash(pkg)
    (pkg / "notes.txt").write_text("changed, but not code\n")
    (pkg / "repro" / "plotting.py").write_text("a plot changed\n")
    (pkg / ".ipynb_checkpoints" / "a-checkpoint.py").write_text("x = 5\n")
    assert source_hash(pkg) == v0
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert source_hash(pkg) != v0


def test_code_version_is_the_code_as_imported(monkeypatch):
    """Taken when floss_core is imported: a file edited later does not change the key of what this process
    computes (its results come from the code it imported)."""
    from floss_core import _source

    before = cache.code_version()
    assert _source.AT_IMPORT == _source.source_hash()  # nothing was edited since the import
    monkeypatch.setattr(_source, "source_hash", lambda package=None: "an edited file")
    assert cache.code_version() == before
    monkeypatch.setattr(_source, "AT_IMPORT", "other code")
    assert cache.code_version() != before


def test_sidecar_records_params_and_version(tmp_path):
    cached("demo", {"n": 3, "device": "cpu"}, Counter(), cache_dir=tmp_path)
    (meta_path,) = tmp_path.glob("demo-*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["params"] == {"n": 3, "device": "cpu"}
    assert meta["code_version"] == cache.code_version()
    assert meta["name"] == "demo" and meta["compute_seconds"] >= 0
    assert meta_path.with_suffix(".pt").exists()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"


def test_default_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOSS_CACHE_DIR", str(tmp_path / "env_cache"))
    cached("demo", {"n": 1}, Counter())
    assert list((tmp_path / "env_cache").glob("demo-*.pt"))


@dataclass
class Result:
    values: torch.Tensor
    label: str


def test_results_are_plain_and_identical_on_first_and_later_calls(tmp_path):
    w = torch.ones(2, requires_grad=True)

    def compute():
        return {"grad_carrying": w * 2, "result": Result(values=torch.zeros(2), label="r"), "pair": (1, 2.5)}

    first = cached("demo", {}, compute, cache_dir=tmp_path)
    second = cached("demo", {}, compute, cache_dir=tmp_path)
    for out in (first, second):
        assert not out["grad_carrying"].requires_grad
        assert set(out["result"]) == {"values", "label"} and out["result"]["label"] == "r"
        assert torch.equal(out["result"]["values"], torch.zeros(2))
        assert tuple(out["pair"]) == (1, 2.5)


def test_unstorable_results_and_params_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="result\\['f'\\]"):
        cached("demo", {}, lambda: {"f": object()}, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="dict"):
        cached("demo", {}, lambda: [1, 2], cache_dir=tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        cached("demo", {"t": torch.ones(1)}, Counter(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="name"):
        cached("../escape", {}, Counter(), cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.pt"))


@dataclass(frozen=True)
class Inner:
    k: int = 4


@dataclass(frozen=True)
class Sweep:
    delays: tuple = (4, 8)
    inner: Inner = Inner()


def test_dataclass_params_are_keyed_by_their_fields(tmp_path):
    compute = Counter()
    cached("demo", {"sweep": Sweep(), "device": "cpu"}, compute, cache_dir=tmp_path)
    cached("demo", {"sweep": {"delays": [4, 8], "inner": {"k": 4}}, "device": "cpu"}, compute, cache_dir=tmp_path)
    cached("demo", Sweep(), compute, cache_dir=tmp_path)
    assert compute.calls == 2  # a dataclass inside the params is its asdict; the whole params may be one too
    cached("demo", {"sweep": Sweep(inner=Inner(k=5)), "device": "cpu"}, compute, cache_dir=tmp_path)
    assert compute.calls == 3
    meta = [json.loads(p.read_text()) for p in tmp_path.glob("demo-*.json")]
    assert {"sweep": {"delays": [4, 8], "inner": {"k": 5}}, "device": "cpu"} in [m["params"] for m in meta]
