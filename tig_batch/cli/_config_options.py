"""The explanations' options: methods and their settings, the base-point search, metrics.

``@config_options`` gives the command ``config``, an :class:`ExplainConfig` with its
``BaselineSearch`` and ``MetricsConfig``; ``@explanation_options`` the same without the
metrics' options (``config.metrics`` then computes none), for commands that score nothing.
Defaults are read from those objects, so each setting has one place.
"""

from __future__ import annotations

from typing import Any

import click

from tig_batch._faithfulness import METRICS, MetricsConfig
from tig_batch.cli._job_options import option_group
from tig_batch.engine import OPTIMIZERS, RULES, BaselineSearch
from tig_batch.pipeline import METHODS, ExplainConfig

_CONFIG, _SEARCH, _METRICS = ExplainConfig(), BaselineSearch(), MetricsConfig()


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if chosen == ("all",):
        return METHODS
    if not chosen:
        raise click.BadParameter(f"give at least one method; choose from {','.join(METHODS)}")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {','.join(METHODS)} (or all)"
        )
    return chosen


def _metrics(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if chosen == ("none",):
        return ()
    if chosen == ("all",):
        return METRICS
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown {', '.join(unknown) or '(none given)'}; choose from {','.join(METRICS)}, "
            "or all, or none"
        )
    return chosen


def _target(ctx: click.Context, param: click.Parameter, value: str) -> str | int:
    if value in ("predicted", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("predicted, label, or a class index") from None


def _config(**values: Any) -> ExplainConfig:
    """The configuration the flags give: the ``search_*`` ones build its ``BaselineSearch``,
    the ``metrics_*`` ones its ``MetricsConfig`` (no metrics when there are none)."""
    search = {k[len("search_") :]: values.pop(k) for k in list(values) if k.startswith("search_")}
    metrics = {
        k[len("metrics_") :]: values.pop(k) for k in list(values) if k.startswith("metrics_")
    }
    optimizer, gradient = search["optimizer"], search["gradient"]
    if optimizer != "ascent" and (gradient == "exact" or search["adaptive_lr"]):
        flag = "--search-gradient exact" if gradient == "exact" else "--search-adaptive-lr"
        raise click.UsageError(
            f"{flag} applies to ascent steps; add --search-optimizer ascent ({optimizer} "
            "steps use the frozen path gradient and no step length)"
        )
    return ExplainConfig(
        search=BaselineSearch(**search),
        metrics=MetricsConfig(**metrics) if metrics else MetricsConfig(names=()),
        **values,
    )


_SEARCH_OPTIONS = (
    click.option(
        "--search-gradient", "search_gradient", type=click.Choice(["frozen-path", "exact"]),
        default=_SEARCH.gradient, show_default=True,
        help="Gradient of mu in the base-point search (exact needs --backend torch).",
    ),
    click.option(
        "--search-optimizer", "search_optimizer", type=click.Choice(OPTIMIZERS),
        default=_SEARCH.optimizer, show_default=True,
        help="surrogate: each step maximises mu on the frozen-path model of IG under the value "
        "range and the --min-gap constraint, then moves --search-damping of the way. ascent: "
        "the paper's gradient ascent on mu. projection: closed-form steps to the tangential "
        "part of the explanation, blind to the gap (docs/method.md).",
    ),
    click.option(
        "--search-iterations", "search_n_iterations", type=click.IntRange(0),
        default=_SEARCH.n_iterations, show_default=True, help="Steps of the base-point search.",
    ),
    click.option(
        "--search-lr", "search_lr", type=click.FloatRange(min=0), default=_SEARCH.lr,
        show_default=True, help="Ascent step length (l2, in pixel units).",
    ),
    click.option(
        "--search-adaptive-lr", "search_adaptive_lr", is_flag=True,
        help="Per-image ascent step lengths: longer after a step that raised mu, shorter after "
        "one that lowered it.",
    ),
    click.option(
        "--search-damping", "search_damping", type=click.FloatRange(0, 1, min_open=True),
        default=_SEARCH.damping, show_default=True,
        help="surrogate and projection: the fraction of the way to the step's solution moved.",
    ),
    click.option(
        "--search-inner-iterations", "search_inner_iterations", type=click.IntRange(0),
        default=_SEARCH.inner_iterations, show_default=True,
        help="surrogate: ascent steps on the frozen-path problem per search step (no model "
        "calls).",
    ),
    click.option(
        "--search-anneal", "search_anneal", type=click.FloatRange(0, 1), default=_SEARCH.anneal,
        show_default=True,
        help="surrogate: the share of the steps over which the gap aimed for falls from the "
        "zero base-point's to --min-gap (0: aim for --min-gap at once).",
    ),
    click.option(
        "--search-n-steps", "search_n_steps", type=click.IntRange(1), default=_SEARCH.n_steps,
        show_default=True,
        help="Quadrature nodes inside the search (the final IG uses --n-steps): the search "
        "only ranks base-points, so a coarse rule suffices (docs/method.md).",
    ),
    click.option(
        "--target-mu", "search_target_mu", type=click.FloatRange(0, 1),
        help="Stop an image's search once its mu reaches this.",
    ),
    click.option(
        "--min-gap", "search_min_gap", type=click.FloatRange(0, 1, max_open=True),
        default=_SEARCH.min_gap, show_default=True,
        help="The share of the zero base-point's output gap f_c(x) - f_c(0) that a tangential "
        "base-point must keep, so its explanation still accounts for the output. 0 is the "
        "paper's unconstrained problem: higher mu, but base-points next to the input and "
        "near-blank explanations.",
    ),
)  # fmt: skip

_METHOD_OPTIONS = (
    click.option(
        "--methods", default=",".join(_CONFIG.methods), show_default=True, callback=_methods,
        help=f"Comma-separated methods, or all. The default is the paper's nine; all adds "
        f"{', '.join(m for m in METHODS if m not in _CONFIG.methods)} (Guided IG, Blur IG, "
        "Expected Gradients: together about eight 50-node IGs per image; expectedgrad needs "
        "--reference-data).",
    ),
    click.option(
        "--method", type=click.Choice(RULES), default=_CONFIG.method, show_default=True,
        help="IG quadrature rule.",
    ),
    click.option(
        "--n-steps", type=click.IntRange(1), default=_CONFIG.n_steps, show_default=True,
        help="IG quadrature nodes for the attributions.",
    ),
    click.option(
        "--target", default=_CONFIG.target, show_default=True, callback=_target,
        help="predicted, label (from the shard), or a class index.",
    ),
    click.option(
        "--seed", type=int, default=_CONFIG.seed, show_default=True,
        help="Seed of the random base-points, SmoothGrad and a random search start.",
    ),
    click.option(
        "--gaussian-sigma", type=click.FloatRange(min=0), default=_CONFIG.gaussian_sigma,
        show_default=True,
    ),
    click.option(
        "--blur-sigma", type=click.FloatRange(min=0), default=_CONFIG.blur_sigma,
        show_default=True, help="In pixels.",
    ),
    click.option(
        "--smoothgrad-sigma", type=click.FloatRange(min=0),
        default=_CONFIG.smoothgrad_sigma, show_default=True,
    ),
    click.option(
        "--smoothgrad-samples", type=click.IntRange(1), default=_CONFIG.smoothgrad_samples,
        show_default=True,
    ),
    click.option(
        "--guidedig-n-steps", type=click.IntRange(1), default=_CONFIG.guidedig_n_steps,
        show_default=True, help="Guided IG: steps (one gradient each) from the zero base-point.",
    ),
    click.option(
        "--guidedig-fraction", type=click.FloatRange(0, 1, min_open=True),
        default=_CONFIG.guidedig_fraction, show_default=True,
        help="Guided IG: the share of features (smallest |gradient| first) moved per sub-step.",
    ),
    click.option(
        "--guidedig-max-dist", type=click.FloatRange(0, 1), default=_CONFIG.guidedig_max_dist,
        show_default=True,
        help="Guided IG: how far a feature may stray from the straight path (share of it).",
    ),
    click.option(
        "--blurig-max-sigma", type=click.FloatRange(0, min_open=True),
        default=_CONFIG.blurig_max_sigma, show_default=True,
        help="Blur IG: the blur (pixels) the path starts from.",
    ),
    click.option(
        "--blurig-n-steps", type=click.IntRange(1), default=_CONFIG.blurig_n_steps,
        show_default=True, help="Blur IG: steps (one gradient each).",
    ),
    click.option(
        "--expectedgrad-samples", type=click.IntRange(1), default=_CONFIG.expectedgrad_samples,
        show_default=True,
        help="Expected Gradients: drawn (reference, path position) pairs per image, one "
        "gradient each.",
    ),
    click.option(
        "--on-bad-image", type=click.Choice(["error", "skip"]),
        default=_CONFIG.on_bad_image, show_default=True,
        help="Images with NaN/Inf pixels: stop, or flag and skip them.",
    ),
)  # fmt: skip

_METRIC_OPTIONS = (
    click.option(
        "--metrics", "metrics_names", default=",".join(_METRICS.names), show_default=True,
        callback=_metrics,
        help="Faithfulness metrics per image and method, comma-separated, or all, or none: "
        "deletion and insertion (AUCs of the explained output as the most relevant pixels "
        "are removed, or inserted, first; one shared pass), infidelity, sparseness (Gini "
        "index), sensitivity (max-sensitivity: re-runs every method --sensitivity-samples "
        "times per image, about 12x the cost of a 50-node IG for each IG method, so not on "
        "by default). Completeness is |delta|, stored anyway.",
    ),
    click.option(
        "--deletion-steps", "metrics_deletion_steps", type=click.IntRange(1),
        default=_METRICS.deletion_steps, show_default=True,
        help="Deletion and insertion: points on the curve (forward passes per image: twice "
        "this plus 2).",
    ),
    click.option(
        "--deletion-replacement", "metrics_deletion_replacement",
        type=click.Choice(["zero", "blur"]), default=_METRICS.deletion_replacement,
        show_default=True,
        help="Deletion and insertion: a removed pixel takes the zero base-point's value, or "
        "the blurred image's (--blur-sigma). Zero favours IG from the zero base-point.",
    ),
    click.option(
        "--infidelity-sigma", "metrics_infidelity_sigma", type=click.FloatRange(0, min_open=True),
        default=_METRICS.infidelity_sigma, show_default=True,
        help="Infidelity: standard deviation of the Gaussian perturbations.",
    ),
    click.option(
        "--infidelity-samples", "metrics_infidelity_samples", type=click.IntRange(1),
        default=_METRICS.infidelity_samples, show_default=True,
        help="Infidelity: perturbations per image (one forward pass each).",
    ),
    click.option(
        "--infidelity-normalize", "metrics_infidelity_normalize", is_flag=True,
        help="Infidelity: rescale the attributions by their least-squares factor first, so "
        "methods in different units (gradients, IG) compare (Captum's normalize).",
    ),
    click.option(
        "--sensitivity-radius", "metrics_sensitivity_radius",
        type=click.FloatRange(0, min_open=True), default=_METRICS.sensitivity_radius,
        show_default=True, help="Max-sensitivity: the L-inf radius of the perturbations.",
    ),
    click.option(
        "--sensitivity-samples", "metrics_sensitivity_samples", type=click.IntRange(1),
        default=_METRICS.sensitivity_samples, show_default=True,
        help="Max-sensitivity: perturbed inputs per image (one explanation each).",
    ),
)  # fmt: skip

# The explanations: methods, quadrature, target, seed, each method's settings, the base-point
# search's and the metrics'; the command receives ``config``.
config_options = option_group(
    "config", _config, *_METHOD_OPTIONS, *_SEARCH_OPTIONS, *_METRIC_OPTIONS
)
# The same without the metrics (``config.metrics`` computes none): for the sanity check.
explanation_options = option_group("config", _config, *_METHOD_OPTIONS, *_SEARCH_OPTIONS)
