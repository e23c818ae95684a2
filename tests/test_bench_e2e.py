"""``tig-batch bench e2e``: the paper-style reference against the engine and finite differences,
a problem with a known answer, and a ``--quick`` run's outputs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SHAPE, D, smooth_mlp

from tig_batch import TorchClassifier, alignment, quadrature, tangent_basis
from tig_batch.bench._measure import reset_peak_rss
from tig_batch.bench.e2e import SEARCHES
from tig_batch.bench.reference import (
    ReferenceSearch,
    alignment_gradient,
    midpoint_rule,
    path_integral,
    reference_tangential,
    tangential_alignment,
)
from tig_batch.bench.scaling import loglog_slope
from tig_batch.cli import main
from tig_batch.engine._ig import integrate
from tig_batch.engine._search import alignment_gradient as engine_alignment_gradient


def _basis(batch: int, r: int, seed: int) -> torch.Tensor:
    jacobian = torch.randn(batch, D, r, generator=torch.Generator().manual_seed(seed))
    return tangent_basis(jacobian.double()).basis


def _mu(model, image, baseline, target, basis, nodes, weights) -> float:  # type: ignore[no-untyped-def]
    with torch.enable_grad():
        ig = path_integral(model, image, baseline, target, nodes, weights, create_graph=False)
    return float(tangential_alignment(ig, basis))


def test_reference_gradient_equals_the_engines_exact_gradient(images: torch.Tensor) -> None:
    """On a tanh network the curvature term matters: frozen-path would differ by > 1e-3."""
    model, target, basis = smooth_mlp(), torch.tensor([4, 3, 2, 1]), _basis(4, 3, seed=2)
    baselines = 0.5 * torch.rand(images.shape, generator=torch.Generator().manual_seed(3)).double()
    rule = quadrature("midpoint", 6)
    classifier = TorchClassifier(model)
    ig = integrate(classifier, images, baselines, target, rule, 7, basis)
    expected = engine_alignment_gradient(
        classifier, images, baselines, target, basis, rule, ig, 7, exact=True
    )
    nodes, weights = midpoint_rule(6, torch.float64)
    for i in range(len(images)):
        mu, grad = alignment_gradient(
            model, images[i], baselines[i], int(target[i]), basis[i], nodes, weights
        )
        torch.testing.assert_close(mu, ig.alignment[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad.flatten(), expected[i], rtol=1e-9, atol=1e-12)


def test_reference_gradient_matches_central_finite_differences(images: torch.Tensor) -> None:
    model, basis = smooth_mlp(1), _basis(1, 4, seed=5)[0]
    image, baseline = images[0], torch.full_like(images[0], 0.2)
    nodes, weights = midpoint_rule(5, torch.float64)
    _, grad = alignment_gradient(model, image, baseline, 2, basis, nodes, weights)
    h, numeric = 1e-6, torch.empty(D, dtype=torch.float64)
    for i in range(D):
        step = torch.zeros(D, dtype=torch.float64)
        step[i] = h
        up, down = (baseline + s * step.view(SHAPE) for s in (1, -1))
        numeric[i] = (
            _mu(model, image, up, 2, basis, nodes, weights)
            - _mu(model, image, down, 2, basis, nodes, weights)
        ) / (2 * h)
    torch.testing.assert_close(grad.flatten(), numeric, rtol=1e-5, atol=1e-8)


def test_reference_reaches_a_known_optimum_on_a_linear_problem() -> None:
    """Logit weights ``w``: ``IG(x; a) = (x - a) * w``, so ``x = a0 + U c / w`` with an interior
    ``a0`` has a base-point (``a0``) whose explanation lies in the tangent space: mu = 1."""
    generator = torch.Generator().manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(0.5 + torch.rand(2, D, generator=generator, dtype=torch.float64))
    basis = _basis(3, 3, seed=12)
    a0 = 0.3 + 0.4 * torch.rand(3, D, generator=generator, dtype=torch.float64)
    u = torch.bmm(basis, torch.randn(3, 3, 1, generator=generator, dtype=torch.float64))[..., 0]
    u = 0.15 * u / u.abs().amax(1, keepdim=True)
    inputs = (a0 + u / model[1].weight.detach()[0]).view(3, *SHAPE)
    zero_mu = alignment(inputs.flatten(1) * model[1].weight.detach()[0], basis)
    assert zero_mu.max() < 0.9  # the zero base-point is far from the answer

    result = reference_tangential(
        model, inputs, torch.zeros(3, dtype=torch.long), basis,
        ReferenceSearch(lr=0.01, n_iterations=300, n_steps=4, min_gap=0.0),
    )  # fmt: skip
    assert result.alignment.min() >= 0.99
    assert result.baselines.min() >= 0 and result.baselines.max() <= 1
    assert result.n_gradient_evaluations == 3 * (3 * 4 * 300 + 4)
    assert (result.trace.diff(dim=1) >= 0).all()  # the best iterate is kept
    final = torch.stack(
        [
            path_integral(
                model, inputs[i], result.baselines[i], 0, *midpoint_rule(4, torch.float64)
            )
            for i in range(3)
        ]
    )
    torch.testing.assert_close(alignment(final.detach(), basis), result.alignment)

    # held to the gap rule, it keeps only base-points that keep 90% of the zero one's gap
    held = reference_tangential(
        model, inputs, torch.zeros(3, dtype=torch.long), basis,
        ReferenceSearch(lr=0.01, n_iterations=300, n_steps=4, min_gap=0.9),
    )  # fmt: skip
    with torch.no_grad():
        logit = model(inputs)[:, 0]
        zero_gap = logit - model(torch.zeros_like(inputs))[:, 0]
        gap = logit - model(held.baselines)[:, 0]
    assert (gap >= 0.9 * zero_gap - 1e-12).all()
    assert (held.alignment < result.alignment).all()


def test_loglog_slope_recovers_a_power_law() -> None:
    values = [1, 2, 4, 8]
    assert loglog_slope(values, [100 * v**-0.5 for v in values]) == pytest.approx(0.5)
    assert loglog_slope([3], [1.0]) is None


def test_peak_rss_sees_an_allocation_after_a_reset() -> None:
    before = reset_peak_rss()
    if before is None:
        pytest.skip("no /proc/self/clear_refs here: peaks are not reported")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
    assert peak - before >= 60 * 1024
    del block


def test_e2e_without_captum_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    result = CliRunner().invoke(main, ["bench", "e2e", "--bundle", str(tmp_path), "-q"])
    assert result.exit_code == 2, result.output
    assert "Captum, which is not installed: pip install captum" in result.output


def test_e2e_without_a_bundle_says_how_to_get_one() -> None:
    result = CliRunner().invoke(main, ["bench", "e2e", "--quick", "-q"])
    assert result.exit_code == 2
    assert "no --bundle given and no quickstart bundle in" in result.output
    assert "run `tig-batch quickstart`" in result.output


@pytest.mark.slow
def test_e2e_quick_run_on_tiny_models(tmp_path: Path) -> None:
    _one_step_bundle(tmp_path / "bundle")
    threads = torch.get_num_threads()
    paths = {name: tmp_path / f"e2e.{name}" for name in ("json", "md", "png")}
    result = CliRunner().invoke(
        main,
        [
            "bench", "e2e", "--bundle", str(tmp_path / "bundle"), "--quick", "--threads", "1",
            "-q", "--json", str(paths["json"]), "--markdown", str(paths["md"]),
            "--figure", str(paths["png"]),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == paths["md"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    report = json.loads(paths["json"].read_text())
    assert report["threads"] == 1 and torch.get_num_threads() == threads  # restored

    plain = {row["name"]: row for row in report["plain_ig"]}
    assert list(plain) == ["Captum", "tig-batch torch", "tig-batch onnx"]
    assert plain["Captum"]["ratio_to_captum"] == 1.0
    for row in plain.values():
        assert row["images_per_s"] > 0 and row["ratio_to_captum"] > 0 and row["gflops"] > 0
        assert row["max_rel_diff"] < 1e-5  # the same midpoint IG as Captum's riemann_middle
        # --quick tries internal batches of 4 and 16; the row is the contender at its fastest
        by_size = {int(size): rate for size, rate in row["images_per_s_by_internal_batch"].items()}
        assert set(by_size) == {4, 16}
        assert row["images_per_s"] == max(by_size.values())
        assert row["internal_batch_size"] == max(by_size, key=by_size.__getitem__)
    captum_best = plain["Captum"]["images_per_s"]
    onnx = plain["tig-batch onnx"]
    assert onnx["ratio_to_captum"] == pytest.approx(onnx["images_per_s"] / captum_best)
    assert "| contender | 4 | 16 |" in result.output
    flops = report["flops"]
    assert flops["per_evaluation"] == pytest.approx(2 * _forward_flops(), rel=0.01)

    tangential = report["tangential"]
    assert [row["name"] for row in tangential] == [*SEARCHES, "paper-style reference"]
    *ours, reference = tangential
    assert [row["images"] for row in tangential] == [4] * len(SEARCHES) + [2]
    # --quick: 3 iterations of 4 nodes; ours count 4 evaluations of 4, the reference 3 x 3K + K
    assert [row["gradient_evaluations_per_image"] for row in ours] == [4 * 4] * len(SEARCHES)
    assert reference["gradient_evaluations_per_image"] == 3 * 4 * 3 + 4
    assert reference["speedup_vs_reference"] == 1.0
    assert all(row["speedup_vs_reference"] > 0 for row in ours)
    for row in tangential:
        assert 0 <= row["mean_mu"] <= 1 and 0 <= row["mean_mu_shared"] <= 1
        assert math.isfinite(row["mean_output_gap"])

    curves = {curve["variable"]: curve for curve in report["scaling"]}
    assert list(curves) == ["batch size", "n_steps", "tangent rank", "d"]
    assert [p["value"] for p in curves["batch size"]["points"]] == [1, 2]
    assert all(p["plain_ig"] is None for p in curves["tangent rank"]["points"])
    assert all(p["tangent_step"] > 0 for c in curves.values() for p in c["points"])
    assert curves["d"]["slopes"]["plain_ig"] is None  # one image size in --quick
    metrics = report["metrics"]
    assert metrics["images"] == 4 and metrics["rounds"] == 1
    assert metrics["metrics"] == ["deletion", "insertion", "infidelity", "sparseness"]
    assert metrics["seconds_without"] > 0 and metrics["seconds_with"] > 0
    assert metrics["ratio"] == pytest.approx(metrics["seconds_with"] / metrics["seconds_without"])
    assert "| default metrics |" in result.output
    assert [g["goal"].split(" ")[0] for g in report["goals"]] == [
        "plain", "IG", *["tangential"] * len(SEARCHES), "explain"
    ]  # fmt: skip


@pytest.mark.slow
def test_e2e_only_runs_one_part(tmp_path: Path) -> None:
    _one_step_bundle(tmp_path / "bundle")
    json_path = tmp_path / "e2e.json"
    result = CliRunner().invoke(
        main,
        [
            "bench", "e2e", "--bundle", str(tmp_path / "bundle"), "--quick", "--threads", "1",
            "-q", "--only", "metrics", "--json", str(json_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    assert report["plain_ig"] == [] and report["tangential"] == [] and report["scaling"] == []
    assert report["flops"] is None and report["metrics"]["images"] == 4
    assert [g["goal"].split(" ")[0] for g in report["goals"]] == ["explain"]
    assert "**Plain IG**" not in result.output and "**Faithfulness metrics**" in result.output


def _one_step_bundle(path: Path) -> None:
    """A bundle with torch models (the benchmark runs both backends): the demo architectures
    after one training step each on mnist-5k (speed and agreement do not need a good model)."""
    from tig_batch.data import resolve_dataset
    from tig_batch.export import export_checkpoints
    from tig_batch.models import TrainConfig, save_checkpoint, train_autoencoder, train_classifier

    train, test = resolve_dataset("mnist-5k", "train"), resolve_dataset("mnist-5k", "test")
    config = TrainConfig(epochs=1, max_steps=1)
    for name, trained in (
        ("classifier", train_classifier(train, test, config)),
        ("autoencoder", train_autoencoder(train, test, config, latent_dim=8)),
    ):
        save_checkpoint(path.parent / name, trained.model, trained.metadata)
    export_checkpoints(path.parent / "autoencoder", path, checkpoint=path.parent / "classifier")


def _forward_flops() -> float:
    """The demo CNN's multiply-adds by hand: conv1 1->32 and conv2 32->64 (3x3) at 28x28 and
    14x14, fc 64*7*7 -> 128 -> 10; two FLOPs each. The input gradient costs the same again."""
    conv1 = 28 * 28 * 32 * 9 * 1
    conv2 = 14 * 14 * 64 * 9 * 32
    fc = 64 * 7 * 7 * 128 + 128 * 10
    return 2.0 * (conv1 + conv2 + fc)
