"""Population-based tuning of the training recipe (``nasfleet train --tune pbt|pb2``) on Ray Tune."""

from nasfleet.orchestrator.tuning.population import TrialSummary, TuneSettings, TuneTrainingOutcome, tune_training

__all__ = ["TrialSummary", "TuneSettings", "TuneTrainingOutcome", "tune_training"]
