"""Evaluating a trained run's subnets: load it, evaluate in this process or on the Ray actor pool.

The pool itself (:class:`nasfleet.orchestrator.evaluate.pool.EvaluationPool`) imports Ray;
import it from its module.
"""

from nasfleet.orchestrator.evaluate.evaluator import (
    InProcessEvaluator,
    SubnetEvaluator,
    evaluate_standard_subnets,
    standard_subnets,
    subnet_evaluator,
)
from nasfleet.orchestrator.evaluate.subnets import EVAL_BATCH_SIZE, SubnetResult, accuracy, evaluate_arch
from nasfleet.orchestrator.evaluate.trained import TrainedSupernet, build_model, job_of_checkpoint, load_trained

__all__ = [
    "EVAL_BATCH_SIZE", "InProcessEvaluator", "SubnetEvaluator", "SubnetResult", "TrainedSupernet", "accuracy",
    "build_model", "evaluate_arch", "evaluate_standard_subnets", "job_of_checkpoint", "load_trained",
    "standard_subnets", "subnet_evaluator",
]
