"""Datasets as HDF5 shards: the format, the one reader, the writer, converters, built-ins.

The rest of tig-batch reads images only through :func:`iter_batches` (or the streams built
on it), so every consumer gets the same validation and error messages.
"""

from tig_batch.data._builtin import BUILTIN_DATASETS, builtin_dataset, cache_dir, resolve_dataset
from tig_batch.data._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Batch,
    DatasetInfo,
    ShardInfo,
    decode,
    iter_batches,
    iter_rows,
    open_dataset,
    shard_paths,
)
from tig_batch.data._ingest import ingest, read_arrays, read_image_folder
from tig_batch.data._readers import CLASS_NAMES, Converted, read_cifar10, read_fer2013, read_idx
from tig_batch.data._safe_pickle import safe_load_pickle
from tig_batch.data._stream import DatasetSummary, iter_shuffled, summarize
from tig_batch.data._writer import COMPRESSIONS, Records, ShardSpec, write_shards

__all__ = [
    "BUILTIN_DATASETS",
    "CLASS_NAMES",
    "COMPRESSIONS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Batch",
    "Converted",
    "DatasetInfo",
    "DatasetSummary",
    "Records",
    "ShardInfo",
    "ShardSpec",
    "builtin_dataset",
    "cache_dir",
    "decode",
    "ingest",
    "iter_batches",
    "iter_rows",
    "iter_shuffled",
    "open_dataset",
    "read_arrays",
    "read_cifar10",
    "read_fer2013",
    "read_idx",
    "read_image_folder",
    "resolve_dataset",
    "safe_load_pickle",
    "shard_paths",
    "summarize",
    "write_shards",
]
