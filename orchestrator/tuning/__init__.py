"""Population-based tuning of the training recipe (``nasfleet train --tune pbt|pb2``) on Ray Tune."""

from nasfleet.orchestrator.tuning.population import TrialSummary, TuneTrainingOutcome, tune_training

__all__ = ["TrialSummary", "TuneTrainingOutcome", "tune_training"]
