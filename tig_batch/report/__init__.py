"""Tables and figures from explain outputs: what a person looks at.

Reads the HDF5 files ``tig-batch explain`` writes (a file, or a directory of them), and writes
a summary table (Markdown and JSON) with the faithfulness metrics explain computed, the density
of the alignment ``mu`` per method against the chance level, ``mu`` against deletion AUC,
example heat maps, and one self-contained HTML page holding all of them.
"""

from tig_batch.report._examples import ExampleRef, load_examples, select_examples
from tig_batch.report._faithfulness import faithfulness_figure
from tig_batch.report._figures import (
    COLOUR_SCALES,
    Example,
    density,
    density_figure,
    examples_figure,
    pyplot,
    save_figure,
)
from tig_batch.report._frontier import frontier_figure
from tig_batch.report._page import DEFAULT_EXAMPLES, Report, html_page, write_report
from tig_batch.report._summary import (
    FLAGS_EXPLAINED,
    MethodSummary,
    Scores,
    read_scores,
    result_files,
    summarize,
    summarize_scores,
)
from tig_batch.report._table import (
    COLUMN_NOTES,
    METRIC_COLUMNS,
    flagged_text,
    format_value,
    markdown_rows,
    markdown_table,
    write_summary,
)

__all__ = [
    "COLOUR_SCALES",
    "COLUMN_NOTES",
    "DEFAULT_EXAMPLES",
    "FLAGS_EXPLAINED",
    "METRIC_COLUMNS",
    "Example",
    "ExampleRef",
    "MethodSummary",
    "Report",
    "Scores",
    "density",
    "density_figure",
    "examples_figure",
    "faithfulness_figure",
    "flagged_text",
    "format_value",
    "frontier_figure",
    "html_page",
    "load_examples",
    "markdown_rows",
    "markdown_table",
    "pyplot",
    "read_scores",
    "result_files",
    "save_figure",
    "select_examples",
    "summarize",
    "summarize_scores",
    "write_report",
    "write_summary",
]
