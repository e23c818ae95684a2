"""ONNX export: every supported layer's input-gradient, whole bundles, and their refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import tig_batch as tig
from tig_batch._bundle import CLASSIFIER, MANIFEST, InputSpec, read_manifest
from tig_batch.backends import OnnxClassifier, Runtime, load_bundle
from tig_batch.errors import ModelError
from tig_batch.export import export_bundle, gradient_graph
from tig_batch.export._trace import save_onnx

pytestmark = pytest.mark.slow  # each export takes a few seconds

LAYERS = {
    "conv": nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
    "conv-transpose": nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
    "relu": nn.ReLU(),
    "leaky-relu": nn.LeakyReLU(0.1),
    "gelu": nn.GELU(),
    "silu": nn.SiLU(),
    "sigmoid": nn.Sigmoid(),
    "tanh": nn.Tanh(),
    "softmax": nn.Softmax(dim=1),
    "max-pool": nn.MaxPool2d(3, stride=2, padding=1),
    "max-pool-tiling": nn.MaxPool2d(2),  # ONNX MaxPool with indices, backward by MaxUnpool
    "avg-pool": nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    "adaptive-avg-pool": nn.AdaptiveAvgPool2d((4, 3)),
    "batch-norm": nn.BatchNorm2d(4),
    "dropout": nn.Dropout(0.5),
    "upsample-nearest": nn.Upsample(scale_factor=2),
    "upsample-bilinear": nn.Upsample(scale_factor=2, mode="bilinear"),
}


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _with_head(layer: nn.Module) -> nn.Module:
    model = nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(3))
    model(torch.rand(2, 4, 9, 9))
    for module in model.modules():  # non-trivial running statistics for eval-mode batch norm
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _exported(model: nn.Module, tmp_path: Path, output: str = "logit") -> OnnxClassifier:
    example = torch.rand(2, 4, 9, 9)
    path = tmp_path / "classifier.onnx"
    save_onnx(
        gradient_graph(model, output, example), (example, torch.zeros(2, dtype=torch.long)),
        path, ["x", "target"], ["logits", "grad"],
    )  # fmt: skip
    return OnnxClassifier(path, output, 3, Runtime())


def _assert_gradients_match(model: nn.Module, onnx: OnnxClassifier, output: str) -> None:
    reference = tig.TorchClassifier(model, output)
    for batch in (1, 3, 17):
        x = torch.rand(batch, 4, 9, 9, generator=torch.Generator().manual_seed(batch))
        target = torch.arange(batch) % 3
        logits, grad = onnx.logits_and_grad(x, target)
        ref_logits, ref_grad = reference.logits_and_grad(x, target)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_supported_layer_matches_autograd(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _with_head(LAYERS[name])
    _assert_gradients_match(model, _exported(model, tmp_path), "logit")


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_small_networks_with_batch_norm_and_residuals(output: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _with_head(
        nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), Residual(8),
            nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(2),
        )
    )  # fmt: skip
    _assert_gradients_match(model, _exported(model, tmp_path, output), output)


def test_tiling_max_pools_send_ties_to_the_first_maximum(tmp_path: Path) -> None:
    """Constant image regions give equal maxima (and all-zero windows after a ReLU): torch
    routes the gradient to the first; so must ONNX Runtime, and the ReLU's mask applied to
    the pooled gradient must zero the same entries."""
    torch.manual_seed(3)
    model = _with_head(
        nn.Sequential(
            nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
    )  # fmt: skip
    onnx = _exported(model, tmp_path)
    reference = tig.TorchClassifier(model)
    for batch in (1, 3, 17):
        x = torch.rand(batch, 4, 9, 9, generator=torch.Generator().manual_seed(batch))
        x[:, :, :6] = 0.25  # equal inputs give equal activations, hence tied windows
        target = torch.arange(batch) % 3
        grad = onnx.logits_and_grad(x, target)[1]
        torch.testing.assert_close(
            grad, reference.logits_and_grad(x, target)[1], rtol=1e-5, atol=1e-5
        )


class Warp(nn.Module):
    """grid_sample: its backward has no ONNX lowering."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.zeros(x.shape[0], 3, 3, 2) + torch.linspace(-0.9, 0.9, 3)[:, None]
        return nn.functional.grid_sample(x, grid, align_corners=False)


def test_an_unsupported_op_is_named_with_its_layer_and_nothing_is_written(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(4, 2, 3), nn.ReLU(), Warp(), nn.Flatten(), nn.Linear(18, 3))
    target = tmp_path / "bundle"
    with pytest.raises(ModelError, match=r"grid_sampler_2d_backward.*layer '2' \(Warp\)"):
        export_bundle(model, *_autoencoder(), target, InputSpec((4, 9, 9)), ["a", "b", "c"])
    assert list(tmp_path.iterdir()) == []


def _classifier() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 3)
    ).eval()  # fmt: skip


def _autoencoder() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    encoder = nn.Sequential(
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 6)
    )
    decoder = nn.Sequential(
        nn.Linear(6, 4 * 5 * 5), nn.ReLU(), nn.Unflatten(1, (4, 5, 5)),
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1), nn.Sigmoid(),
    )  # fmt: skip
    return encoder.eval(), decoder.eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "demo"
    real = torch.rand(8, 4, 9, 9, generator=torch.Generator().manual_seed(4))
    export_bundle(
        _classifier(), *_autoencoder(), path, InputSpec((4, 9, 9)), ["a", "b", "c"],
        verify_inputs=real,
    )  # fmt: skip
    return path


def test_bundle_manifest_records_what_it_holds(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert manifest.input.shape == (4, 9, 9) and manifest.class_names == ("a", "b", "c")
    assert manifest.latent_dim == 6 and manifest.explained_output == "logit"
    assert set(manifest.files) == {
        "classifier.onnx", "classifier_forward.onnx", "encoder.onnx", "decoder_jvp.onnx"
    }  # fmt: skip
    assert manifest.verification["passed"] and manifest.verification["real_images"] == 7
    assert max(manifest.verification["max_relative_error"].values()) < 1e-5
    assert {"torch", "onnxruntime", "onnx"} <= set(manifest.versions)


def test_ig_and_alignment_agree_across_backends(bundle: Path) -> None:
    loaded = load_bundle(bundle, Runtime(threads=1, internal_batch_size=5))
    encoder, decoder = _autoencoder()
    images = torch.rand(5, 4, 9, 9, generator=torch.Generator().manual_seed(5))
    results = []
    for classifier, manifold in [
        (loaded.classifier, loaded.manifold),
        (tig.TorchClassifier(_classifier()), tig.TorchManifold(encoder, decoder)),
    ]:
        tangent = tig.tangent_space(manifold, images)
        search = tig.optimal_baselines(
            classifier, images, tangent, search=tig.BaselineSearch(n_iterations=3)
        )
        ig = tig.integrated_gradients(classifier, images, search.baselines, n_steps=8)
        results.append(
            (ig.attributions, tig.alignment(ig.attributions, tangent.basis), tangent.rank)
        )
    (onnx_attr, onnx_mu, onnx_rank), (torch_attr, torch_mu, torch_rank) = results
    assert torch.equal(onnx_rank, torch_rank)
    torch.testing.assert_close(onnx_attr, torch_attr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(onnx_mu, torch_mu, rtol=1e-4, atol=1e-5)


def test_a_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in bundle.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    data = bytearray((copy / CLASSIFIER).read_bytes())
    data[-1] ^= 1
    (copy / CLASSIFIER).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"classifier\.onnx: sha256 does not match"):
        load_bundle(copy)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["format_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="version 99"):
        load_bundle(copy)


def test_logits_come_from_the_forward_graph_and_bundles_without_it_still_load(
    bundle: Path, tmp_path: Path
) -> None:
    images = torch.rand(6, 4, 9, 9, generator=torch.Generator().manual_seed(6))
    expected = tig.TorchClassifier(_classifier()).logits(images)
    loaded = load_bundle(bundle, Runtime(threads=1))
    assert loaded.classifier._forward is not None
    torch.testing.assert_close(loaded.classifier.logits(images), expected, rtol=1e-5, atol=1e-5)

    older = tmp_path / "older"  # as written before the forward graph was added
    shutil.copytree(bundle, older, ignore=shutil.ignore_patterns("classifier_forward.onnx"))
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["files"]["classifier_forward.onnx"]
    (older / MANIFEST).write_text(json.dumps(manifest))
    loaded = load_bundle(older, Runtime(threads=1))
    assert loaded.classifier._forward is None
    torch.testing.assert_close(loaded.classifier.logits(images), expected, rtol=1e-5, atol=1e-5)


def test_onnx_workers_do_not_spin_wait_unless_asked(bundle: Path) -> None:
    """Idle ORT workers spinning between runs hold the cores torch needs in between."""
    key = "session.intra_op.allow_spinning"
    for runtime, spinning in ((Runtime(), "0"), (Runtime(spin_wait=True), None)):
        loaded = load_bundle(bundle, runtime)
        sessions = [loaded.classifier._session, loaded.classifier._forward]
        sessions += [loaded.manifold._encoder, loaded.manifold._jvp]
        for session in sessions:
            options = session.session.get_session_options()
            if spinning is None:  # ORT's default, which spins
                with pytest.raises(Exception, match="does not have configuration"):
                    options.get_session_config_entry(key)
            else:
                assert options.get_session_config_entry(key) == spinning


def test_existing_bundles_are_kept_unless_overwrite(bundle: Path) -> None:
    before = (bundle / MANIFEST).read_bytes()
    with pytest.raises(ModelError, match="exists; pass overwrite=True"):
        export_bundle(_classifier(), *_autoencoder(), bundle, InputSpec((4, 9, 9)), ["a", "b", "c"])
    assert (bundle / MANIFEST).read_bytes() == before


def test_failed_verification_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="export verification failed"):
        export_bundle(
            _classifier(), *_autoencoder(), tmp_path / "b", InputSpec((4, 9, 9)), ["a", "b", "c"],
            tolerance=1e-15,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_the_callers_models_alone(tmp_path: Path) -> None:
    """The export traces float32 eval-mode copies; the caller's modules keep dtype and mode."""
    models = [m.double().train() for m in (_classifier(), *_autoencoder())]
    export_bundle(*models, tmp_path / "b", InputSpec((4, 9, 9)), ["a", "b", "c"])
    for model in models:
        assert model.training and {p.dtype for p in model.parameters()} == {torch.float64}
