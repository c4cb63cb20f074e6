"""The progress line rank 0 prints under Ray and mpiexec: what it says, and an ETA from this attempt's pace."""

from __future__ import annotations

from nasfleet.orchestrator.train.progress import ProgressLines


def record(step: int) -> dict:
    return {
        "step": step,
        "timing": {"samples_per_s": 251.6},
        "by_role": {"largest": {"loss": 1.23456, "accuracy": 0.8123}, "smallest": {"loss": 2.0, "accuracy": 0.5}},
    }


def test_a_line_names_the_step_the_losses_the_rate_and_the_eta() -> None:
    now = [100.0]
    lines = ProgressLines(total_steps=4000, start_step=0, clock=lambda: now[0])
    now[0] += 60.0  # 400 steps in a minute: 3600 left take 9 minutes
    assert lines.line(record(400)) == (
        "step 400/4000 (10%)  largest loss 1.235 acc 0.81  smallest loss 2.000 acc 0.50  252 samples/s  ETA 0:09:00"
    )


def test_a_resumed_attempt_counts_only_its_own_steps() -> None:
    now = [0.0]
    lines = ProgressLines(total_steps=1000, start_step=900, clock=lambda: now[0])
    assert lines.line(record(900)).endswith("ETA ?")  # nothing measured yet
    now[0] = 10.0  # 50 steps in 10 s since the resume: 50 left take 10 s, not the 1,000-step average
    assert lines.line(record(950)).endswith("ETA 0:00:10")
    assert "(100%)" in lines.line(record(1000)) and lines.line(record(1000)).endswith("ETA 0:00:00")
