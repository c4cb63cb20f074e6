"""A torch process group whose rendezvous store listens on the node's address, not on every interface.

``init_process_group(init_method="env://")`` makes rank 0 serve a ``TCPStore`` on ``::`` (or
``0.0.0.0``) whatever ``MASTER_ADDR`` says -- torch 2.13, libuv and legacy servers alike -- and
Ray Train's ``TorchConfig`` uses exactly that. Torch reuses a multi-tenant store server that
already runs in the process on the same port, so rank 0 first serves one on a socket bound to
its node IP (127.0.0.1 on a loopback cluster), then the process group is built as Ray builds it.

Imports Ray Train and torch: import it only where a ``TorchTrainer`` is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
from ray.train._internal.base_worker_group import BaseWorkerGroup
from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

from nasfleet.orchestrator.launch.rendezvous_store import serve_rendezvous_store

def _serve_on_node_ip() -> tuple[str, int]:
    host = ray.util.get_node_ip_address()
    return host, serve_rendezvous_store(host)


def _set_master(host: str, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(port)


class _NodeAddressTorchBackend(_TorchBackend):
    """Ray Train's torch backend, except where rank 0's rendezvous store listens."""

    def on_start(self, worker_group: BaseWorkerGroup, backend_config: TorchConfig) -> None:
        backend = backend_config.backend or "gloo"
        host, port = worker_group.execute_single(0, _serve_on_node_ip)
        worker_group.execute(_set_master, host=host, port=port)
        if not isinstance(worker_group, V1WorkerGroup):
            worker_group.execute(_set_torch_distributed_env_vars)
        ranks = range(len(worker_group))
        kwargs = {"backend": backend, "world_size": len(worker_group), "init_method": "env://"}
        ray.get(
            [
                worker_group.execute_single_async(
                    rank, _setup_torch_process_group, world_rank=rank, timeout_s=backend_config.timeout_s, **kwargs
                )
                for rank in ranks
            ]
        )


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """``TorchConfig`` whose rendezvous store listens on the node IP; ``backend`` defaults to "gloo"
    (Ray's GPU/TPU detection and TPU multi-slice set-up are not repeated here)."""

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        return _NodeAddressTorchBackend
