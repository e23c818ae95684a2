"""The whole report: table, figures and one self-contained HTML page, from explain outputs."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tig_batch.errors import DataError
from tig_batch.report._examples import load_examples, select_examples
from tig_batch.report._faithfulness import faithfulness_figure
from tig_batch.report._figures import ColourScale, density_figure, examples_figure
from tig_batch.report._frontier import frontier_figure
from tig_batch.report._summary import (
    FLAGS_EXPLAINED,
    MethodSummary,
    open_output,
    read_scores,
    summarize_scores,
)
from tig_batch.report._table import COLUMN_NOTES, table_header, table_rows, write_summary

DEFAULT_EXAMPLES = 10


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote, and the numbers in it."""

    out_dir: Path
    summaries: list[MethodSummary]
    chance_level: float
    n_images: int
    files: dict[str, Path]  # "html", "markdown", "json", "density", "frontier",
    # "faithfulness", "examples"
    notes: list[str]  # what could not be shown, e.g. an input shard that is gone


def _job(path: Path) -> dict:
    with open_output(path) as file:
        return json.loads(file.attrs.get("job", "{}"))


def _settings(path: Path) -> dict[str, object]:
    """The explain settings a reader needs to interpret the numbers, from the output's job."""
    job = _job(path)
    config, search = job.get("config", {}), job.get("config", {}).get("search", {})
    metrics = config.get("metrics", {})
    return {
        "backend": job.get("backend"),
        "target": config.get("target"),
        "IG rule": config.get("method"),
        "n_steps": config.get("n_steps"),
        "search optimizer": search.get("optimizer"),
        "search iterations": search.get("n_iterations"),
        "search n_steps": search.get("n_steps"),
        "search min_gap": _min_gap_words(search),
        "smoothgrad samples": config.get("smoothgrad_samples"),
        "metrics": ", ".join(metrics.get("names", [])) or None,
        "deletion and insertion": _flip_words(metrics),
        "infidelity": _infidelity_words(metrics),
        "max-sensitivity": (
            f"{metrics.get('sensitivity_samples')} perturbations within "
            f"{metrics.get('sensitivity_radius')}"
            if "sensitivity" in metrics.get("names", [])
            else None
        ),
        "expectedgrad references": _reference_words(job.get("references")),
        "bundle manifest sha256": (job.get("bundle_manifest_sha256") or "")[:12],
    }


def _flip_words(metrics: dict) -> str | None:
    if not {"deletion", "insertion"} & set(metrics.get("names", [])):
        return None
    return (
        f"{metrics.get('deletion_steps')} steps, removed pixels replaced by the "
        f"{metrics.get('deletion_replacement')} base-point, curve normalised by f_c(x)"
    )


def _infidelity_words(metrics: dict) -> str | None:
    if "infidelity" not in metrics.get("names", []):
        return None
    scaled = ", attributions rescaled (normalize)" if metrics.get("infidelity_normalize") else ""
    return (
        f"{metrics.get('infidelity_samples')} Gaussian perturbations of sigma "
        f"{metrics.get('infidelity_sigma')}{scaled}"
    )


def _reference_words(record: dict | None) -> str | None:
    if not record:
        return None
    return f"{record['count']} images of {record['name']} (sha256 {record['sha256'][:12]})"


def _replacement(path: Path) -> str | None:
    """What deletion and insertion replaced pixels with, as the output records it."""
    return _job(path).get("config", {}).get("metrics", {}).get("deletion_replacement")


def _min_gap_words(search: dict) -> str | None:
    """How the search's gap constraint reads: relative, absolute, or the paper's problem."""
    if "min_gap" not in search:
        return None
    min_gap = search["min_gap"]
    if not min_gap:  # 0, or None in format 1 outputs
        return "none (the paper's unconstrained problem)"
    unit = " of the zero base-point's output gap" if search.get("gap_relative", True) else ""
    return f"{min_gap:g}{unit}"


def _relative_min_gap(path: Path) -> float | None:
    """The search's ``min_gap`` as a fraction of the zero base-point's gap, when it is one."""
    with open_output(path) as file:
        search = json.loads(file.attrs.get("job", "{}")).get("config", {}).get("search", {})
    min_gap = search.get("min_gap")
    return float(min_gap) if min_gap and search.get("gap_relative", True) else None


def html_page(
    summaries: Sequence[MethodSummary],
    figures: Sequence[Path],
    out: Path,
    chance: float,
    details: dict[str, object] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """``report.html``: the table, what each column means, and the figures in one file
    (images inlined as data URIs)."""
    header = table_header(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    columns = "".join(
        f"<dt>{html.escape(h)}</dt><dd>{html.escape(COLUMN_NOTES[h])}</dd>"
        for h in header
        if h in COLUMN_NOTES
    )
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table_rows(summaries)
    )
    titles = {
        "alignment_density": "Density of mu per method",
        "alignment_gap_frontier": "What alignment costs: the alignment-gap frontier",
        "alignment_deletion": "Alignment against faithfulness: mu and deletion AUC per method",
        "examples": "Examples",
    }
    images = "".join(
        f"<h2>{html.escape(titles.get(p.stem, p.stem))}</h2><img alt={html.escape(p.name)!r} "
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in figures
    )
    facts = "".join(
        f"<li>{html.escape(str(key))}: {html.escape(str(value))}</li>"
        for key, value in (details or {}).items()
        if value not in (None, "")
    )
    warnings = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tig-batch report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}.note{{color:#a40}}dt{{font-weight:bold;margin-top:.4em}}
dd{{margin-left:1.5em}}</style>
</head><body><h1>Tangential alignment of explanations</h1>
<p>mu = ||U<sup>T</sup>v|| / ||v||: the share of an explanation v in the tangent space of the
data manifold. A random direction scores about the chance level sqrt(r/d) = {chance:.3f}.
Read mu together with the output gap f<sub>c</sub>(x) - f<sub>c</sub>(a) (mean gap; gap /
zero's: as a share of the zero base-point's gap): alignment bought by collapsing the gap
explains nothing. mu says whether an explanation is readable, not whether it is faithful to
the model: the faithfulness columns (when explain computed them) say that.</p>
<table><tr>{head}</tr>{cells}</table>
<h2>The columns</h2><dl>{columns}</dl>
<p>{html.escape(FLAGS_EXPLAINED[0].upper() + FLAGS_EXPLAINED[1:])}</p>
<ul>{facts}</ul>{f'<ul class="note">{warnings}</ul>' if warnings else ""}{images}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def write_report(
    paths: Sequence[Path | str],
    out_dir: Path | str,
    ids: Sequence[str] | None = None,
    n_examples: int = DEFAULT_EXAMPLES,
    colour_scale: ColourScale = "row",
) -> Report:
    """Summarise explain outputs (files or directories) and write the report into ``out_dir``.

    Writes ``summary.md``, ``summary.json``, ``alignment_density.png``,
    ``alignment_gap_frontier.png`` (when the outputs hold the tangential search's frontier),
    ``alignment_deletion.png`` (when the outputs hold deletion AUCs: ``mu`` against deletion
    AUC per method), ``examples.png`` (the images with ``ids``, else ``n_examples`` spread
    over the target classes; ``colour_scale`` as :func:`examples_figure` takes it) and
    ``report.html``, which holds the table, what each column means and the figures in one
    file.
    """
    out = Path(out_dir)
    scores = read_scores(paths)
    summaries = summarize_scores(scores)
    chance = scores.chance_level
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{out}: cannot create the report directory ({error.strerror})") from None
    details: dict[str, object] = {
        "explain outputs": len(scores.files),
        "images": scores.n_images,
        **_settings(scores.files[0]),
    }
    written = {"density": density_figure(scores, out)}
    frontier = frontier_figure(scores, out, _relative_min_gap(scores.files[0]))
    if frontier is not None:
        written["frontier"] = frontier
    faithfulness = faithfulness_figure(scores, out, _replacement(scores.files[0]))
    if faithfulness is not None:
        written["faithfulness"] = faithfulness
    notes: list[str] = []
    refs = select_examples(scores.files, ids, n_examples) if n_examples or ids else []
    if refs:
        examples, notes = load_examples(refs)
        written["examples"] = examples_figure(examples, out, colour_scale)
    written["markdown"], written["json"] = write_summary(
        summaries, out, chance,
        {"files": [str(p) for p in scores.files], "n_images": scores.n_images, "notes": notes},
    )  # fmt: skip
    figures = [
        written[k] for k in ("density", "frontier", "faithfulness", "examples") if k in written
    ]
    written["html"] = html_page(summaries, figures, out, chance, details, notes)
    return Report(out, summaries, chance, scores.n_images, written, notes)
