"""A torch rendezvous store that listens on one address only (torch's own listens on every interface).

``init_process_group(init_method="env://")`` makes rank 0 serve a ``TCPStore`` on ``::`` (or
``0.0.0.0``) whatever ``MASTER_ADDR`` says (torch 2.13). Torch reuses a multi-tenant store
server already running in the process on the same port, so serving one first, on a socket
bound to the chosen address, keeps the rendezvous there.
"""

from __future__ import annotations

import socket

import torch.distributed as dist

_served: list[dist.TCPStore] = []
"""Keeps the served stores alive for the life of the process (a Ray Train worker lives as long as
its group): torch's cache of multi-tenant servers holds only weak references."""


def serve_rendezvous_store(host: str) -> int:
    """Serve a TCPStore on ``host`` only, on a free port that it returns, for env:// rendezvous here."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    port = listener.getsockname()[1]
    store = dist.TCPStore(
        host, port, is_master=True, multi_tenant=True, master_listen_fd=listener.fileno(), wait_for_workers=False
    )
    listener.detach()  # the store's server owns the descriptor now and closes it when it stops
    _served.append(store)
    return port
