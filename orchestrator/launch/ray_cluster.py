"""Joining a Ray cluster, or starting a local one, and checking it can hold a job.

A cluster started here (no address given and none in ``RAY_ADDRESS``) is for this machine
alone: every socket it opens (GCS, raylet, object manager, workers, agents, dashboard,
metrics, gloo) listens on loopback only.

Ray 2.60 decides where its servers listen from the node IP: exactly ``127.0.0.1`` makes the
GCS, raylet, object manager and core workers bind loopback, and the agents and metrics
servers follow ``is_localhost(node_ip)``. But ``ray.init(_node_ip_address="127.0.0.1")`` and
``ray start --node-ip-address=127.0.0.1`` rewrite a loopback address to the machine's external
one (``resolve_ip_for_localhost`` in ``ray/_private/services.py``) unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` -- the switch Ray uses to keep single-machine clusters
on macOS and Windows on loopback. :func:`loopback_cluster` holds those settings.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nasfleet.errors import NasfleetError

LOOPBACK_HOST = "127.0.0.1"
RAY_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""'0': Ray keeps a loopback node IP instead of replacing it with the external address."""


@dataclass(frozen=True)
class LoopbackCluster:
    """What a Ray cluster on this machine needs so that nothing it starts listens beyond loopback."""

    ray_env: dict[str, str]
    """Environment of whatever starts the Ray processes (they inherit it): the driver calling
    ``ray.init`` or the shell running ``ray start``; a driver joining such a cluster at
    ``127.0.0.1:PORT`` needs it too, or Ray rewrites the address to the external one."""
    worker_env: dict[str, str]
    """For Ray Train workers on a cluster this process did not start:
    ``RunConfig(worker_runtime_env={"env_vars": worker_env})``. Included in ``ray_env``."""
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keywords for ``ray.init`` that start the cluster."""


def loopback_interface() -> str:
    """The name of the interface that holds 127.0.0.1 (``lo`` on Linux, ``lo0`` on macOS)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(address.address == LOOPBACK_HOST for address in addresses):
            return name
    return "lo"


def loopback_cluster(metrics_export_port: int | None = None) -> LoopbackCluster:
    """The settings of a local loopback-only cluster; ``metrics_export_port``: its Prometheus port."""
    interface = loopback_interface()
    # gloo listens on the address the hostname resolves to, NCCL's bootstrap on the first
    # non-loopback interface, unless told which interface to use.
    worker_env = {"GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface}
    # "local": a cluster of its own. A bare ray.init() joins the newest cluster `ray start` (or a
    # test's ray.cluster_utils.Cluster) left in /tmp/ray/ray_current_cluster on this machine.
    init_kwargs: dict[str, Any] = {
        "address": "local", "_node_ip_address": LOOPBACK_HOST, "dashboard_host": LOOPBACK_HOST,
    }
    if metrics_export_port is not None:
        init_kwargs["_metrics_export_port"] = metrics_export_port
    return LoopbackCluster({RAY_LOOPBACK_SWITCH: "0", **worker_env}, worker_env, init_kwargs)


def init_loopback_ray(metrics_export_port: int | None = None, **ray_init_kwargs: Any) -> None:
    """Start a local Ray cluster that listens on loopback only (``ray_init_kwargs`` go to ``ray.init``).

    Sets :attr:`LoopbackCluster.ray_env` in this process's environment first, so that every Ray
    process and worker inherits it, and so do child processes that join this cluster.
    """
    import ray
    from ray._private import ray_constants

    settings = loopback_cluster(metrics_export_port)
    os.environ.update(settings.ray_env)
    # Ray reads the switch once, when it is imported, which may have happened already.
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(**(settings.init_kwargs | ray_init_kwargs))


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on a cluster address nothing listens on (ray.init would retry for minutes)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise NasfleetError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect_ray(address: str | None, metrics_export_port: int | None = None) -> None:
    """Join the given cluster, the one `ray job submit` runs us in, or start a local loopback one."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, configure_logging=False)
        else:
            init_loopback_ray(metrics_export_port, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a new local cluster"
        raise NasfleetError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None


def check_resources(workers: int, use_gpu: bool, have: int | None = None, threads: int = 1) -> None:
    """Enough GPUs (one a worker), or CPUs (``threads`` a worker); ``have`` defaults to the connected cluster's."""
    import ray

    kind = "GPU" if use_gpu else "CPU"
    need = workers if use_gpu else workers * threads
    if have is None:
        have = int(ray.cluster_resources().get(kind, 0))
    if need > have:
        each = "" if use_gpu or threads == 1 else f" ({threads} threads each)"
        raise NasfleetError(f"{workers} workers{each} need {need} {kind}s but the Ray cluster has {have}")


class ListeningSocket(NamedTuple):
    protocol: str
    """'tcp' (in LISTEN state) or 'udp' (bound, not connected)."""
    address: str
    port: int
    pid: int
    process: str

    @property
    def on_loopback(self) -> bool:
        """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
        ip = ipaddress.ip_address(self.address.split("%", 1)[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip).is_loopback


def listening_sockets(root_pids: Iterable[int]) -> list[ListeningSocket]:
    """Every listening TCP and bound UDP socket of these processes and all their descendants.

    Processes that exit while being looked at are skipped.
    """
    import psutil

    processes: dict[int, psutil.Process] = {}
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
            processes.update((p.pid, p) for p in [root, *root.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    found: list[ListeningSocket] = []
    for process in processes.values():
        try:
            name, connections = process.name(), process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in connections:
            tcp = c.type == socket.SOCK_STREAM
            if (tcp and c.status == psutil.CONN_LISTEN) or (not tcp and not c.raddr):
                found.append(ListeningSocket("tcp" if tcp else "udp", c.laddr.ip, c.laddr.port, process.pid, name))
    return found
