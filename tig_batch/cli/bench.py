"""``tig-batch bench``: performance measurements (not tests)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click


@click.group()
def bench() -> None:
    """Measure how fast tig-batch runs on this machine.

    \b
    Example:
        tig-batch bench kernels --quick
        tig-batch bench backends
    """


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return values


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@bench.command()
@click.option(
    "--images",
    default=None,
    help="Comma-separated image sizes among mnist (1x28x28), cifar (3x32x32), tiny-imagenet "
    "(3x64x64), imagenet (3x224x224). Default: all on a GPU, mnist,cifar on a CPU.",
)
@click.option("--steps", default="16,32,64", callback=_int_list, help="Values of K, the nodes.")
@click.option("--ranks", default="16,144", callback=_int_list, help="Values of r, the rank.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="B.")
@click.option(
    "--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True
)
@click.option(
    "--device", default=None, help="cuda, cuda:N or cpu. Default: cuda if available, else cpu."
)
@click.option(
    "--peak-gbps",
    type=float,
    default=None,
    help="Peak memory bandwidth in GB/s, if the device's cannot be read from its properties.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="torch CPU threads (default: torch's choice). 1 avoids stalls on a busy machine.",
)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1), help="CPU runs.")
@click.option("--quick", is_flag=True, help="A tiny grid (mnist, K=16, r=16, B=4): a smoke test.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the rows to this JSON file.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def kernels(
    images: str | None,
    steps: list[int],
    ranks: list[int],
    batch_size: int,
    dtype: str,
    device: str | None,
    peak_gbps: float | None,
    threads: int | None,
    repeats: int,
    quick: bool,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Time the fused Triton kernels against their torch twins.

    For each image size, K and r: time (ms), achieved bandwidth (GB/s, from the bytes an
    ideal fused kernel reads and writes), the speed-up over the torch twin and the fraction
    of the device's peak memory bandwidth. The kernels need a CUDA GPU; on a CPU only the
    torch twins are timed.

    \b
    Example:
        tig-batch bench kernels --quick
        tig-batch bench kernels --images cifar --steps 32 --json kernels.json
    """
    import torch

    from tig_batch.kernels import bench as runner

    if threads is not None:
        torch.set_num_threads(threads)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if target.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA device here; try --device cpu")
    on_gpu = target.type == "cuda"
    if quick:
        image_list, steps, ranks, batch_size, repeats = ["mnist"], [16], [16], 4, 2
    elif images is None:
        image_list = list(runner.IMAGE_SIZES) if on_gpu else ["mnist", "cifar"]
    else:
        image_list = [name.strip() for name in images.split(",") if name.strip()]
    unknown = sorted(set(image_list) - set(runner.IMAGE_SIZES))
    if unknown:
        raise click.BadParameter(
            f"unknown image size(s) {', '.join(unknown)}; choose from "
            f"{', '.join(runner.IMAGE_SIZES)}",
            param_hint="--images",
        )
    peak = peak_gbps or runner.peak_bandwidth_gbps(target)

    def progress(message: str) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    rows = runner.run(
        image_list, steps, ranks, batch_size, getattr(torch, dtype), target, peak, repeats,
        progress,
    )  # fmt: skip

    name = torch.cuda.get_device_name(target) if on_gpu else "cpu"
    click.echo(f"device: {name} ({target}), dtype {dtype}, batch {batch_size}")
    if peak is not None:
        click.echo(f"peak memory bandwidth: {peak:.0f} GB/s")
    elif on_gpu:
        click.echo("peak memory bandwidth: unknown (pass --peak-gbps for the % peak column)")
    if not on_gpu:
        click.echo("Triton kernel figures need a CUDA GPU: only the torch twins were timed here.")
    header = (
        f"{'op':<22} {'image':<8} {'K':>3} {'r':>4} {'MB':>8} {'torch ms':>9} {'GB/s':>7} "
        f"{'triton ms':>9} {'GB/s':>7} {'speedup':>7} {'% peak':>6} {'max |diff|':>10}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        peak_pct = None if row.peak_fraction is None else 100 * row.peak_fraction
        click.echo(
            f"{row.op:<22} {row.image:<8} {_fmt(row.n_steps, 'd'):>3} {_fmt(row.rank, 'd'):>4} "
            f"{row.bytes_moved / 1e6:>8.1f} {row.torch_ms:>9.3f} {row.torch_gbps:>7.1f} "
            f"{_fmt(row.triton_ms, '.3f'):>9} {_fmt(row.triton_gbps, '.1f'):>7} "
            f"{_fmt(row.speedup, '.2f'):>7} {_fmt(peak_pct, '.0f'):>6} "
            f"{_fmt(row.max_abs_diff, '.1e'):>10}"
        )
    if json_path is not None:
        report = {
            "device": name,
            "dtype": dtype,
            "batch_size": batch_size,
            "peak_gbps": peak,
            "kernels_timed": on_gpu,
            "rows": [dataclasses.asdict(row) for row in rows],
        }
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


@bench.command()
@click.option(
    "--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A bundle to time (default: export the demo CNN and autoencoder to a temporary one).",
)  # fmt: skip
@click.option("--batch-sizes", default="64,256", callback=_int_list, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="Threads for both backends.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the rows to this JSON file.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def backends(
    bundle: Path | None,
    batch_sizes: list[int],
    threads: int | None,
    repeats: int,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Gradient throughput of ONNX Runtime against torch eager, side by side.

    Both run the classifier's input-gradient on the same images and targets with the same
    thread count, timed in alternation; the ratio is ONNX over torch.

    \b
    Example:
        tig-batch bench backends --threads 2
    """
    from tig_batch.bench import time_backends

    def progress(message: str) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    rows = time_backends(bundle, tuple(batch_sizes), threads, repeats, progress)
    header = (
        f"{'batch':>6} {'torch samples/s':>16} {'onnx samples/s':>15} {'ratio':>6} "
        f"{'max |diff|':>11}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        click.echo(
            f"{row.batch_size:>6} {row.torch_samples_per_s:>16.1f} {row.onnx_samples_per_s:>15.1f} "
            f"{row.ratio:>6.2f} {row.max_abs_diff:>11.1e}"
        )
    if json_path is not None:
        payload = [{**dataclasses.asdict(row), "ratio": row.ratio} for row in rows]
        json_path.write_text(json.dumps(payload, indent=2) + "\n")


@bench.command()
@click.option(
    "--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The bundle to measure (mnist-5k shaped). Default: the quickstart's cached bundle.",
)  # fmt: skip
@click.option("--threads", type=click.IntRange(1), help="Threads for torch and ONNX Runtime.")
@click.option(
    "--images",
    "n_images",
    type=click.IntRange(1),
    help="Digits for plain IG, ours, and explain with and without metrics.",
)
@click.option("--reference-images", type=click.IntRange(1), help="Digits for the slow reference.")
@click.option(
    "--reference-iterations", type=click.IntRange(1),
    help="Adam steps of the reference (default 100, chosen by a sweep: docs/performance.md).",
)  # fmt: skip
@click.option(
    "--repeats",
    type=click.IntRange(1),
    help="Alternating rounds of plain IG and of the metrics part.",
)
@click.option("--no-scaling", is_flag=True, help="Skip the scaling curves.")
@click.option(
    "--only", type=click.Choice(["plain", "tangential", "metrics"]),
    help="Run one part (and no scaling curves): plain IG against Captum, tangential IG "
    "against the reference, or explain at its defaults with and without the default "
    "faithfulness metrics.",
)  # fmt: skip
@click.option("--quick", is_flag=True, help="Tiny settings everywhere: a smoke test, not a result.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write every number to this JSON file.",
)  # fmt: skip
@click.option(
    "--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the tables to this Markdown file.",
)  # fmt: skip
@click.option(
    "--figure", "figure_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the scaling curves into this PNG.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def e2e(
    bundle: Path | None,
    threads: int | None,
    n_images: int | None,
    reference_images: int | None,
    reference_iterations: int | None,
    repeats: int | None,
    no_scaling: bool,
    only: str | None,
    quick: bool,
    json_path: Path | None,
    markdown_path: Path | None,
    figure_path: Path | None,
    quiet: bool,
) -> None:
    """tig-batch against Captum and a paper-style reference, end to end, in one run.

    On the same bundle, mnist-5k test digits and settings: plain IG by Captum, tig-batch's
    torch and ONNX backends; tangential IG by a paper-style reference (one image at a time,
    exact gradients by double backward, Adam) and by tig-batch's batched search; peak RSS of
    each; achieved GFLOP/s of IG against a float32 matrix product; `tig-batch explain` at its
    defaults with and without the default faithfulness metrics (the goal: within 1.3x);
    scaling curves against batch size, n_steps, image size and tangent rank. Prints the
    tables (Markdown).

    \b
    Example:
        tig-batch bench e2e --threads 2 --json e2e.json --markdown e2e.md --figure e2e.png
        tig-batch bench e2e --bundle real-bundle --reference-images 4 --no-scaling
        tig-batch bench e2e --bundle real-bundle --threads 2 --only metrics
    """
    from tig_batch.bench import e2e as runner
    from tig_batch.bench import plot_scaling, to_markdown

    if figure_path is not None and (no_scaling or only):
        raise click.UsageError("--figure draws the scaling curves: drop --no-scaling and --only")
    bundle = bundle or _default_bundle()
    settings = runner.QUICK if quick else runner.E2ESettings()
    changes = {
        k: v
        for k, v in (
            ("n_images", n_images), ("metrics_images", n_images),
            ("reference_images", reference_images), ("repeats", repeats),
            ("metrics_repeats", repeats),
        )
        if v is not None
    }  # fmt: skip
    if reference_iterations is not None:
        changes["reference"] = dataclasses.replace(
            settings.reference, n_iterations=reference_iterations
        )
    if no_scaling or only:
        changes["scaling"] = None
    if only:
        changes["parts"] = (only,)
    settings = dataclasses.replace(settings, **changes)

    def progress(message: str) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    result = runner.run_e2e(bundle, settings, threads, progress=progress)
    markdown = to_markdown(result)
    click.echo(markdown, nl=False)
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if markdown_path is not None:
        markdown_path.write_text(markdown)
    if figure_path is not None:
        plot_scaling(result.scaling, figure_path)


@bench.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True,
    help="On the CPU at tiny sizes, kernels forced to their torch twins: the plumbing only.",
)  # fmt: skip
@click.option(
    "--models-only", is_flag=True,
    help="Only train and export the check's demo models into the cache (to carry to a GPU).",
)  # fmt: skip
@click.option("--device", help="The device to check (default cuda; cpu with --dry-run).")
@click.option(
    "--budget-s", type=click.FloatRange(min=1),
    help="Seconds for the whole check (default 330); steps left when it runs out are skipped.",
)  # fmt: skip
@click.option(
    "--peak-gbps", type=click.FloatRange(min=0, min_open=True),
    help="The device's peak memory bandwidth in GB/s, if its properties do not give it.",
)  # fmt: skip
@click.option(
    "--work-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Keep the explain inputs and outputs here (default: a temporary directory).",
)  # fmt: skip
@click.option(
    "--install-log", type=click.Path(dir_okay=False, path_type=Path),
    help="The installer's log (scripts/gpu_check.sh writes it), shown in the report.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def gpu(
    out_dir: Path,
    dry_run: bool,
    models_only: bool,
    device: str | None,
    budget_s: float | None,
    peak_gbps: float | None,
    work_dir: Path | None,
    install_log: Path | None,
    quiet: bool,
) -> None:
    """Check everything that needs a GPU in one run; write OUT_DIR/gpu_check.json and .md.

    The environment, the demo models (trained and exported, or reused from the cache), every
    Triton kernel against its torch twin (mnist, cifar and 64x64x3 images, float32 and
    float16), the kernels' benchmark, `explain --device` on 1,000 mnist-5k test digits with
    every method compared with a CPU run of the same job, plain and tangential IG throughput,
    and Captum's IG on the same device. A failing step is recorded and the rest still run;
    the report is rewritten after every step. scripts/gpu_check.sh installs what a bare CUDA
    host lacks, then runs this.

    \b
    Example:
        tig-batch bench gpu gpu-check
        tig-batch bench gpu /tmp/gpu-dry --dry-run
    """
    from tig_batch.bench import gpu as check

    settings = check.DRY_RUN if dry_run else check.FULL
    changes = {"device": device, "budget_s": budget_s, "peak_gbps": peak_gbps}
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})

    def say(message: str) -> None:
        if not quiet:
            click.echo(f"  {message}", err=True)

    if models_only:
        built = check.prepare_models(settings, say)
        click.echo(f"Bundle: {built}")
        return
    report = check.run_gpu_check(out_dir, settings, work_dir, install_log, say)
    for step in report["steps"]:
        click.echo(f"{step['name']:<28} {step['status']:<10} {step['seconds']:>6.1f} s")
    met = {True: "met", False: "NOT met", None: "not measured"}
    for goal in report["goals"]:
        click.echo(f"goal {met[goal['met']]}: {goal['goal']}: {goal['measured']}")
    click.echo(f"Wrote {out_dir / check.JSON_NAME} and {out_dir / check.MARKDOWN_NAME}")


def _default_bundle() -> Path:
    """The quickstart's cached bundle, or a message saying how to get a bundle."""
    from tig_batch.quickstart import DEFAULT, default_cache_dir

    path = default_cache_dir() / f"models-{DEFAULT.training.key()}" / "bundle"
    if (path / "manifest.json").exists():
        return path
    raise click.UsageError(
        f"no --bundle given and no quickstart bundle in {path}: run `tig-batch quickstart` "
        "(trains and exports one), or export your own with `tig-batch export --checkpoint "
        "CLASSIFIER --autoencoder AUTOENCODER -o BUNDLE` and pass --bundle BUNDLE"
    )
