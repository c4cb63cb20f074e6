"""What runs record: Parquet results of evaluated subnets, and the one-writer lock on a run."""

from nasfleet.orchestrator.results.run_lock import RunHolder, hold_run
from nasfleet.orchestrator.results.store import ParquetLog, ResultsStore, SubnetRecord

__all__ = ["ParquetLog", "ResultsStore", "RunHolder", "SubnetRecord", "hold_run"]
