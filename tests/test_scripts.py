"""Helpers of the scripts in scripts/ (their full runs need trained models: see docs/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tig_batch import BaselineSearch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_search_settings_parse_into_typed_fields() -> None:
    parse = _load("compare_searches").parse_search
    assert parse("") == BaselineSearch()
    search = parse("optimizer=ascent,n_iterations=10,lr=0.25,adaptive_lr=true,min_gap=0.5")
    assert search == BaselineSearch(
        optimizer="ascent", n_iterations=10, lr=0.25, adaptive_lr=True, min_gap=0.5
    )
    assert isinstance(search.n_iterations, int)


def test_every_listed_variant_is_a_valid_search() -> None:
    module = _load("compare_searches")
    searches = [module.parse_search(text) for text in module.VARIANTS.values()]
    assert len(set(searches)) == len(searches)


def test_an_unknown_search_field_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown BaselineSearch field 'steps'"):
        _load("compare_searches").parse_search("steps=3")


def _gradients(graph: Path, images, target):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(["grad"], {"x": images.numpy(), "target": target.numpy()})[0]


@pytest.mark.slow
def test_cpu_contenders_graph_without_max_unpool_computes_the_same(
    digits_bundle: Path, tmp_path: Path
) -> None:
    import numpy as np
    import onnx
    import torch

    rewrite = _load("cpu_contenders").without_max_unpool
    source = digits_bundle / "classifier.onnx"
    assert "MaxUnpool" in {n.op_type for n in onnx.load(source).graph.node}
    flat = rewrite(source, tmp_path / "flat.onnx")
    assert "MaxUnpool" not in {n.op_type for n in onnx.load(flat).graph.node}
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 8, 8, generator=generator)
    target = torch.randint(0, 10, (5,), generator=generator)
    np.testing.assert_allclose(
        _gradients(flat, images, target), _gradients(source, images, target), rtol=0, atol=1e-6
    )


@pytest.mark.slow
def test_cpu_contenders_openvino_reads_the_rewritten_graph(
    digits_bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="optional: pip install openvino")
    import numpy as np
    import torch

    script = _load("cpu_contenders")
    flat = script.without_max_unpool(digits_bundle / "classifier.onnx", tmp_path / "flat.onnx")
    images, target = torch.rand(3, 1, 8, 8), torch.tensor([0, 4, 9])
    grad = script.openvino(flat, 3, (1, 8, 8), 1, f32=True)(images, target)
    expected = _gradients(digits_bundle / "classifier.onnx", images, target)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
