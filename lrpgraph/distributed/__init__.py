"""Explaining data sets beyond one process: on a Ray cluster, results in Parquet (`pip install 'lrpgraph[ray]'`)."""

from .ray_job import RayRun, explain_dataset
from .references import reference_dataset
from .results import read_results

__all__ = ["RayRun", "explain_dataset", "read_results", "reference_dataset"]
