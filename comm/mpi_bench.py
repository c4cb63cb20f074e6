"""Worker launched by ``mpiexec`` for calibration: times collectives, rank 0 writes JSON.

Not meant to be run by hand; see :func:`nasfleet.comm.calibrate.run_calibration`.
Each (operation, size) gets an equal share of the time budget, at least three timed
repetitions after one warm-up; a repetition's time is the slowest rank's.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

OPS = ("allreduce", "allgather")


def _mpi_ops(comm):
    from mpi4py import MPI

    p = comm.Get_size()

    def allreduce(size_bytes: int):
        send = np.ones(max(1, size_bytes // 4), dtype=np.float32)
        recv = np.empty_like(send)
        return lambda: comm.Allreduce(send, recv, op=MPI.SUM)

    def allgather(size_bytes: int):
        send = np.ones(max(1, size_bytes // p), dtype=np.uint8)
        recv = np.empty(len(send) * p, dtype=np.uint8)
        return lambda: comm.Allgather(send, recv)

    return {"allreduce": allreduce, "allgather": allgather}


def _gloo_ops(comm, rendezvous: str):
    import torch
    import torch.distributed as dist

    p, rank = comm.Get_size(), comm.Get_rank()
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=p)

    def allreduce(size_bytes: int):
        tensor = torch.ones(max(1, size_bytes // 4), dtype=torch.float32)
        return lambda: dist.all_reduce(tensor)

    def allgather(size_bytes: int):
        tensor = torch.ones(max(1, size_bytes // p), dtype=torch.uint8)
        out = [torch.empty_like(tensor) for _ in range(p)]
        return lambda: dist.all_gather(out, tensor)

    return {"allreduce": allreduce, "allgather": allgather}


def main() -> None:
    from mpi4py import MPI

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", required=True, help="comma-separated sizes in bytes")
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--backend", choices=("mpi", "gloo"), default="mpi")
    parser.add_argument("--rendezvous", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    sizes = [int(s) for s in args.sizes.split(",")]
    ops = _mpi_ops(comm) if args.backend == "mpi" else _gloo_ops(comm, args.rendezvous)
    share_s = args.budget_s / (len(OPS) * len(sizes))
    samples = []
    for op in OPS:
        for size in sizes:
            run = ops[op](size)
            run()  # warm-up
            times: list[float] = []
            started = time.perf_counter()
            while True:
                comm.Barrier()
                t0 = time.perf_counter()
                run()
                elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
                times.append(elapsed)
                # every rank decides from rank 0's clock so all leave the loop together
                stop = comm.bcast(len(times) >= 3 and time.perf_counter() - started >= share_s or len(times) >= 1000, root=0)
                if stop:
                    break
            samples.append({"op": op, "size_bytes": size, "time_s": float(np.median(times)), "repetitions": len(times)})
    if comm.Get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump({"ranks": comm.Get_size(), "backend": args.backend, "samples": samples}, handle)


if __name__ == "__main__":
    main()
