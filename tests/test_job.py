"""The run spine: a Job planned once, then run; its outputs are the earlier path's, bit for bit."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import tig_batch.job as job_module
from tig_batch._bundle import InputSpec
from tig_batch._selection import Selection
from tig_batch.backends import Runtime, SessionSettings, load_bundle
from tig_batch.data import Records, ShardSpec, write_shards
from tig_batch.engine import BaselineSearch
from tig_batch.job import Job, Storage, plan
from tig_batch.pipeline import ExplainConfig
from tig_batch.runner import RunOptions, explain_dataset, run

CONFIG = ExplainConfig(
    methods=("tangential", "zero", "uniform", "smoothgrad"), n_steps=6,
    search=BaselineSearch(n_iterations=3, n_steps=2), smoothgrad_samples=2,
    internal_batch_size=16,
)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    images, labels = digits
    directory = tmp_path_factory.mktemp("job") / "data"
    spec = ShardSpec((1, 8, 8), class_names=tuple(map(str, range(10))), split="test")
    write_shards([Records(images[:20], labels[:20])], directory, spec, shard_size=8)
    return directory


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tig_batch.export import export_bundle

    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    ).eval()  # fmt: skip
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    decoder = nn.Sequential(nn.Linear(4, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8))).eval()
    path = tmp_path_factory.mktemp("job") / "bundle"
    export_bundle(
        classifier, encoder, decoder, path, InputSpec((1, 8, 8)), list(map(str, range(10)))
    )
    return path


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: found.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset) else None
        )  # fmt: skip
    return found


def _job_attr(path: Path) -> dict:
    with h5py.File(path, "r") as file:
        return json.loads(file.attrs["job"])


@pytest.mark.parametrize(
    "selection", [Selection(), Selection(("2-13",), limit=7)], ids=["all", "selected"]
)
def test_run_job_writes_what_explain_dataset_wrote_bit_for_bit(
    bundle: Path, data: Path, tmp_path: Path, selection: Selection
) -> None:
    """The earlier path (explain_dataset with a loaded bundle and RunOptions) against
    run(Job): every dataset byte for byte and the recorded job equal."""
    runtime = Runtime(threads=1, internal_batch_size=16)
    with runtime.torch_threads():  # what the command line set before a run, too
        old = explain_dataset(
            load_bundle(bundle, "onnx", SessionSettings(threads=1), 16), [data],
            tmp_path / "old", CONFIG, RunOptions(batch_size=5, selection=selection),
        )  # fmt: skip
    job = Job(bundle, (data,), tmp_path / "new", CONFIG, runtime, Storage(5), selection)
    new = run(job)
    assert [p.name for p in new] == [p.name for p in old] and len(new) >= 2
    for before, after in zip(old, new, strict=True):
        want, got = _datasets(before), _datasets(after)
        assert sorted(got) == sorted(want)
        for name, value in want.items():
            assert got[name].dtype == value.dtype and got[name].tobytes() == value.tobytes(), name
        assert _job_attr(after) == _job_attr(before)


def test_plan_the_compatibility_check_and_the_shard_hash_run_once(
    bundle: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run opens its inputs once (one plan), checks each shard once, and hashes each shard
    once; a rerun that finds the outputs finished hashes each once more and explains none."""
    calls: Counter = Counter()

    def counted(name, function):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            key = (name, Path(args[0]).name) if name == "sha256" else name
            calls[key] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(job_module, "_open", counted("plan", job_module._open))
    check = counted("check", job_module.check_compatible)
    monkeypatch.setattr(job_module, "check_compatible", check)
    monkeypatch.setattr(job_module, "sha256", counted("sha256", job_module.sha256))
    job = Job(bundle, (data,), tmp_path, CONFIG, Runtime(threads=1), Storage(5))
    outputs = run(job)
    shards = [p.name for p in outputs]
    assert len(shards) == 3
    assert calls == Counter({"plan": 1, "check": 3, **{("sha256", s): 1 for s in shards}})
    calls.clear()
    assert run(plan(job)) == outputs
    assert calls == Counter({"plan": 1, "check": 3, **{("sha256", s): 1 for s in shards}})
