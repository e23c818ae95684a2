"""The paper-reproduction study, and the model building it shares with the quickstart.

The study (``scripts/reproduce_paper.py`` is its command line) trains or reuses the demo
models, explains the test split with every method through :func:`tig_batch.run`, asks the
paper's open questions as ablations and writes ``docs/results.md``; every step is cached under
a key of the settings that determine it. It reads its outputs with :mod:`tig_batch.report`,
which only reads explain outputs and draws.

``Training``, ``ensure_checkpoint``, ``ensure_bundle`` and ``first_images`` (train or reuse,
export or reuse, cut a test subset) are what the quickstart and the GPU check build their
models with too.
"""

from tig_batch.study._ablations import (
    LATENTS,
    MIN_GAPS,
    SEARCH_ITERATIONS,
    SEARCH_LRS,
    SIGMAS,
    TARGET_MUS,
    Ablation,
    Variant,
    VariantResult,
    adaptive_ablation,
    cost_figure,
    latent_ablation,
    min_gap_ablation,
    optimizer_ablation,
    run_ablation,
    search_ablation,
    sigma_ablation,
)
from tig_batch.study._build import (
    Training,
    ensure_bundle,
    ensure_checkpoint,
    first_images,
    read_images,
)
from tig_batch.study._comparison import PAPER_MODE, Comparison, Row, compare_methods, explain_key
from tig_batch.study._page import PAPER_MU, StudyReport, ablation_table, headline, render
from tig_batch.study._settings import (
    ASCENT,
    FULL,
    QUICK,
    Log,
    Models,
    Settings,
    Splits,
    digest,
    ensure_models,
    resolve_splits,
)

__all__ = [
    "ASCENT",
    "FULL",
    "LATENTS",
    "MIN_GAPS",
    "PAPER_MODE",
    "PAPER_MU",
    "QUICK",
    "SEARCH_ITERATIONS",
    "SEARCH_LRS",
    "SIGMAS",
    "TARGET_MUS",
    "Ablation",
    "Comparison",
    "Log",
    "Models",
    "Row",
    "Settings",
    "Splits",
    "StudyReport",
    "Training",
    "Variant",
    "VariantResult",
    "ablation_table",
    "adaptive_ablation",
    "compare_methods",
    "cost_figure",
    "digest",
    "ensure_bundle",
    "ensure_checkpoint",
    "ensure_models",
    "explain_key",
    "first_images",
    "headline",
    "latent_ablation",
    "min_gap_ablation",
    "optimizer_ablation",
    "read_images",
    "render",
    "resolve_splits",
    "run_ablation",
    "search_ablation",
    "sigma_ablation",
]
