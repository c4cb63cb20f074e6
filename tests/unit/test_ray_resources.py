"""A Ray Train worker reserves one CPU per torch thread: a job asking for more than there is is refused first."""

from __future__ import annotations

import pytest

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.launch.ray_cluster import check_resources


def test_cpu_workers_need_a_cpu_per_thread() -> None:
    check_resources(2, False, have=4, threads=2)
    with pytest.raises(NasfleetError, match=r"2 workers \(2 threads each\) need 4 CPUs but the Ray cluster has 3"):
        check_resources(2, False, have=3, threads=2)
    with pytest.raises(NasfleetError, match="3 workers need 3 CPUs but the Ray cluster has 2"):
        check_resources(3, False, have=2)


def test_gpu_workers_need_a_gpu_each_whatever_their_threads() -> None:
    check_resources(2, True, have=2, threads=8)
    with pytest.raises(NasfleetError, match="2 workers need 2 GPUs"):
        check_resources(2, True, have=1, threads=8)
