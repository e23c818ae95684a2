"""The e2e benchmark's outputs besides JSON: the Markdown tables and the scaling figure."""

from __future__ import annotations

from pathlib import Path

from tig_batch.bench._e2e_metrics import MetricsOverhead
from tig_batch.bench._measure import FlopReport
from tig_batch.bench.e2e import E2EResult
from tig_batch.bench.scaling import ScalingCurve


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def to_markdown(result: E2EResult) -> str:
    """The tables of one run: plain IG, tangential IG, FLOPs, metrics, scaling, goals (the
    parts that ran)."""
    s = result.settings
    lines = [
        *(
            ["**--quick: settings too small for these numbers to mean anything.**", ""]
            if s["smoke"]
            else []
        ),
        f"Bundle `{result.bundle}`, {result.threads} thread(s); torch "
        f"{result.versions['torch']}, ONNX Runtime {result.versions['onnxruntime']}, Captum "
        f"{result.versions['captum']}.",
    ]
    if result.plain_ig and result.flops is not None:
        lines += _plain(result, result.flops)
    if result.tangential:
        lines += _tangential(result)
    if result.metrics is not None:
        lines += _metrics(result.metrics)
    if result.scaling:
        lines += ["", "**Scaling** (ONNX backend, images/s):"]
        for curve in result.scaling:
            lines += [
                "",
                f"| {curve.variable} | plain IG | one-step search |",
                "|---:|---:|---:|",
                *(
                    f"| {p.value} | {_rate(p.plain_ig)} | {_rate(p.tangent_step)} |"
                    for p in curve.points
                ),
                "",
                f"{curve.variable}: {curve.statement()}.",
            ]
    lines += ["", "**Goals**:", ""]
    lines += [f"- {'met' if g.met else 'NOT met'}: {g.goal}: {g.measured}" for g in result.goals]
    return "\n".join(lines) + "\n"


def _metrics(m: MetricsOverhead) -> list[str]:
    without, with_ = m.images / m.seconds_without, m.images / m.seconds_with
    cells = " | ".join(f"{a:.1f} / {b:.1f}" for a, b in zip(
        m.seconds_by_round["without"], m.seconds_by_round["with"], strict=True))  # fmt: skip
    return [
        "",
        f"**Faithfulness metrics** (`tig-batch explain` at its defaults, every step of the run "
        f"included, on the first {m.images} mnist-5k test digits, with the default metrics "
        f"({', '.join(m.metrics)}) and with `--metrics none`; {m.rounds} alternating rounds "
        "after a warm-up round):",
        "",
        "| explain | median seconds | images/s | ratio |",
        "|---|---:|---:|---:|",
        f"| --metrics none | {m.seconds_without:.1f} | {without:.2f} | 1.00x |",
        f"| default metrics | {m.seconds_with:.1f} | {with_:.2f} | {m.ratio:.2f}x |",
        "",
        f"Seconds per round (none / default metrics): {cells}.",
    ]


def _plain(result: E2EResult, f: FlopReport) -> list[str]:
    s = result.settings
    lines = [
        "",
        f"**Plain IG** ({s['n_images']} mnist-5k test digits, zero base-point, {s['n_steps']} "
        f"midpoint nodes, batches of {s['batch_size']}; median of {s['repeats']} alternating "
        "rounds; each contender at the internal batch size (samples per model call) where it "
        "ran fastest, and the ratio to Captum's fastest):",
        "",
        "| contender | internal batch | images/s | vs Captum | max abs diff | max rel diff "
        "| peak RSS MiB | RSS growth MiB | GFLOP/s | % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.plain_ig:
        lines.append(
            f"| {r.name} | {r.internal_batch_size} | {r.images_per_s:.1f} | "
            f"{r.ratio_to_captum:.2f}x | {r.max_abs_diff:.1e} | {r.max_rel_diff:.1e} | "
            f"{_mib(r.peak_rss_mib)} | {_mib(r.rss_growth_mib)} | {r.gflops:.1f} | "
            f"{r.percent_of_matmul:.0f}% |"
        )
    sizes = s["internal_batch_sizes"]
    lines += [
        "",
        "Images/s at each internal batch size:",
        "",
        "| contender | " + " | ".join(map(str, sizes)) + " |",
        "|---|" + "---:|" * len(sizes),
        *(
            f"| {r.name} | "
            + " | ".join(f"{r.images_per_s_by_internal_batch[n]:.1f}" for n in sizes)
            + " |"
            for r in result.plain_ig
        ),
    ]
    lines += [
        "",
        f"One gradient evaluation (forward + input-gradient backward) of the classifier: "
        f"{f.per_evaluation / 1e6:.1f} MFLOP per sample (torch FlopCounterMode); a float32 "
        f"{f.matmul_size}^3 matrix product, timed in the same alternating rounds: "
        f"{f.matmul_gflops:.1f} GFLOP/s on the same threads.",
    ]
    return lines


def _tangential(result: E2EResult) -> list[str]:
    s = result.settings
    rate = result.tangent_space_images_per_s or float("nan")
    lines = [
        "",
        f"**Tangential IG** (search, then a {s['n_steps']}-node IG; the reference on the first "
        f"{s['reference_images']} digits, keeping {s['reference']['min_gap']:.0%} of the zero "
        "base-point's output gap like the defaults; tangent bases shared, computed once at "
        f"{rate:.1f} images/s and not in the rates; median of "
        f"{s['tangential_repeats']} alternating rounds):",
        "",
        "| contender | images | images/s | vs reference | mean mu | mean mu (reference's "
        "images) | mean gap / zero's | images keeping min gap | search mu | search gradient "
        "evals/image | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.tangential:
        lines.append(
            f"| {r.name} | {r.images} | {r.images_per_s:.2f} | {r.speedup_vs_reference:.1f}x | "
            f"{r.mean_mu:.3f} | {r.mean_mu_shared:.3f} | {r.mean_gap_fraction:.0%} | "
            f"{r.keeping_min_gap:.0%} | {r.mean_search_mu:.3f} | "
            f"{r.gradient_evaluations_per_image:,.0f} | {_mib(r.peak_rss_mib)} |"
        )
    return lines


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot_scaling(curves: list[ScalingCurve], path: Path) -> None:
    """Images/s against each variable on log-log axes, one panel per variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=True):
        rates = []
        for key, label, color in (
            ("plain_ig", "plain IG", "C0"),
            ("tangent_step", "one-step search", "C1"),
        ):
            xs = [p.value for p in curve.points if getattr(p, key)]
            ys = [getattr(p, key) for p in curve.points if getattr(p, key)]
            if xs:
                slope = curve.slopes.get(key)
                suffix = "" if slope is None else f" (cost ~ x^{slope:.2f})"
                ax.loglog(xs, ys, "o-", color=color, label=label + suffix)
                rates += ys
        if rates:  # at least a factor 4 of range, so a flat curve looks flat
            middle = (min(rates) * max(rates)) ** 0.5
            ax.set_ylim(min(min(rates), middle / 2) / 1.2, max(max(rates), middle * 2) * 1.2)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(curve.variable)
        ax.set_ylabel("images/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
