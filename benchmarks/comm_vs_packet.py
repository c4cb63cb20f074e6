"""Packet-level cross-check: the flow model's CCT against ns-3's on small leaf-spines.

Each (fabric, collective, size, routing) cell is run twice:

* **flow model** — ``nasfleet.comm.simulate(..., fidelity="flow")``: max-min fair rates,
  per-link latency added once per step, no packets or queues;
* **ns-3** (3.44, PyPI wheel ``ns3``; the scenario is C++ compiled at run time by cppyy so
  that no Python runs per packet): point-to-point links with the same rate and latency,
  drop-tail device queues, no queue discs, MTU 9000, TCP (ns-3's default congestion
  control, CUBIC) on connections opened before the clock starts and kept across steps.
  Steps are bulk-synchronous exactly as in the model: step k+1 starts at the instant the
  last byte of step k reaches its receiver's socket. CCT = last byte of the last step
  received − start of the first step.

Routing on the ns-3 side:

* ``ecmp`` and ``split``: the flow model's own transfers (``comm.packet_check.packet_plan``:
  for ECMP the hash of seed 0, for split its subflows), each a TCP connection pinned to its
  spine. Every destination host has one address per spine (11.spine.leaf.host+1); leaves
  route 11.s/16 up to spine s, spines route 11.s.l/24 down to leaf l; a sender binds its
  own spine-s address so that ACKs return through the same spine.
* ``spray``: one connection per flow to the host's plain address, routed by ns-3's global
  routing with ``RandomEcmpRouting=true`` (each packet picks an uplink at random).

Writes benchmarks/results/comm_vs_packet.{json,md} and docs/img/comm_vs_packet.png.
Run (needs ``pip install 'nasfleet[packet]'``, a few minutes):
``nice -n 5 .venv/bin/python benchmarks/comm_vs_packet.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from nasfleet.comm import build_collective, leaf_spine, simulate
from nasfleet.comm.packet_check import PacketPlan, packet_plan

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
MiB = 2**20

GBPS = 100.0
LATENCY_NS = 500.0
MTU_BYTES = 9000
QUEUE_PACKETS = 100  # per switch output port: 900 KB at MTU 9000 (host NICs queue without limit)
SEGMENT_BYTES = MTU_BYTES - 52  # IPv4 20 + TCP 20 + timestamp option 12
SOCKET_BUFFER_BYTES = 4 * MiB
MIN_RTO_US = 1000
TCP = "ns3::TcpCubic"
ROUTINGS = ("ecmp", "split", "spray")
WORKLOADS = (("allreduce", "ring"), ("allreduce", "halving-doubling"), ("alltoall", "pairwise"))

SCENARIO_CPP = r"""
#include "ns3/core-module.h"
#include "ns3/network-module.h"
#include "ns3/internet-module.h"
#include "ns3/point-to-point-module.h"
#include "ns3/traffic-control-module.h"
#include <vector>
#include <string>

namespace nasfleet_pkt {
using namespace ns3;

struct Result {
  std::vector<double> step_end_s;
  double start_s = -1;
  uint64_t drops = 0;
  uint64_t fast_recoveries = 0;
  uint64_t timeouts = 0;
  bool finished = false;
  std::vector<double> uplink_bytes;  // leaf l -> spine s at l * spines + s, IP bytes incl. ACKs
};

static Result g_res;
static std::vector<Ptr<Socket>> g_tx;
static std::vector<uint64_t> g_want, g_sent, g_rx;
static std::vector<char> g_awaiting;
static std::vector<int> g_step_ptr, g_step_conn;
static std::vector<uint64_t> g_step_bytes;
static size_t g_step = 0;
static int g_pending = 0, g_connected = 0;

static void Fill(int id) {
  Ptr<Socket> s = g_tx[id];
  while (g_sent[id] < g_want[id]) {
    uint32_t room = s->GetTxAvailable();
    if (room == 0) return;
    uint64_t n = std::min<uint64_t>({g_want[id] - g_sent[id], (uint64_t)room, (uint64_t)(1 << 20)});
    int put = s->Send(Create<Packet>((uint32_t)n));
    if (put <= 0) return;
    g_sent[id] += put;
  }
}

static void OnSendSpace(int id, Ptr<Socket>, uint32_t) { Fill(id); }

static void StartStep() {
  if (g_step == 0) g_res.start_s = Simulator::Now().GetSeconds();
  g_pending = 0;
  for (int k = g_step_ptr[g_step]; k < g_step_ptr[g_step + 1]; ++k) {
    int id = g_step_conn[k];
    g_want[id] += g_step_bytes[k];
    g_awaiting[id] = 1;
    ++g_pending;
  }
  for (int k = g_step_ptr[g_step]; k < g_step_ptr[g_step + 1]; ++k) Fill(g_step_conn[k]);
}

static void OnRecv(int id, Ptr<Socket> s) {
  Ptr<Packet> p;
  while ((p = s->Recv())) g_rx[id] += p->GetSize();
  if (g_awaiting[id] && g_rx[id] >= g_want[id]) {
    g_awaiting[id] = 0;
    if (--g_pending == 0) {
      g_res.step_end_s.push_back(Simulator::Now().GetSeconds());
      ++g_step;
      if (g_step + 1 < g_step_ptr.size()) Simulator::ScheduleNow(&StartStep);
      else { g_res.finished = true; Simulator::Stop(); }
    }
  }
}

static void OnAccept(int id, Ptr<Socket> s, const Address&) {
  s->SetRecvCallback(MakeBoundCallback(&OnRecv, id));
}

static void OnConnected(int id, Ptr<Socket>) {
  if (++g_connected == (int)g_tx.size()) Simulator::Schedule(MicroSeconds(10), &StartStep);
}
static void OnConnectFailed(int id, Ptr<Socket>) { Simulator::Stop(); }
static void OnDrop(Ptr<const Packet>) { ++g_res.drops; }
static void OnTcDrop(Ptr<const QueueDiscItem>) { ++g_res.drops; }
static void OnUplinkTx(int link, Ptr<const Packet> p) { g_res.uplink_bytes[link] += p->GetSize(); }
static void OnCongState(TcpSocketState::TcpCongState_t, TcpSocketState::TcpCongState_t now) {
  if (now == TcpSocketState::CA_RECOVERY) ++g_res.fast_recoveries;
  if (now == TcpSocketState::CA_LOSS) ++g_res.timeouts;
}

static Ipv4Address Alias(int spine, int leaf, int local) {
  return Ipv4Address((11u << 24) | ((uint32_t)spine << 16) | ((uint32_t)leaf << 8) | (uint32_t)(local + 1));
}

Result Run(int leaves, int spines, int hosts_per_leaf, double gbps, double latency_ns, int queue_packets,
           int mtu, int segment, int sockbuf, int min_rto_us, bool spray,
           std::vector<int> conn_src, std::vector<int> conn_dst, std::vector<int> conn_spine,
           std::vector<int> step_ptr, std::vector<int> step_conn, std::vector<uint64_t> step_bytes,
           double stop_s, uint32_t rng_run, std::string tcp) {
  g_res = Result();
  g_tx.clear();
  size_t n = conn_src.size();
  g_want.assign(n, 0); g_sent.assign(n, 0); g_rx.assign(n, 0); g_awaiting.assign(n, 0);
  g_step_ptr = step_ptr; g_step_conn = step_conn; g_step_bytes = step_bytes;
  g_step = 0; g_pending = 0; g_connected = 0;
  g_res.uplink_bytes.assign(leaves * spines, 0.0);

  RngSeedManager::SetSeed(1);
  RngSeedManager::SetRun(rng_run);
  Config::SetDefault("ns3::Ipv4GlobalRouting::RandomEcmpRouting", BooleanValue(spray));
  Config::SetDefault("ns3::TcpL4Protocol::SocketType", TypeIdValue(TypeId::LookupByName(tcp)));
  Config::SetDefault("ns3::TcpSocket::SegmentSize", UintegerValue(segment));
  Config::SetDefault("ns3::TcpSocket::SndBufSize", UintegerValue(sockbuf));
  Config::SetDefault("ns3::TcpSocket::RcvBufSize", UintegerValue(sockbuf));
  Config::SetDefault("ns3::TcpSocket::DelAckTimeout", TimeValue(MicroSeconds(20)));
  // thousands of SYNs at t = 0 can overflow a queue; retry them in 1 ms, not ns-3's 3 s
  Config::SetDefault("ns3::TcpSocket::ConnTimeout", TimeValue(MilliSeconds(1)));
  Config::SetDefault("ns3::TcpSocketBase::MinRto", TimeValue(MicroSeconds(min_rto_us)));
  Config::SetDefault("ns3::TcpSocketBase::ClockGranularity", TimeValue(MicroSeconds(1)));

  int H = leaves * hosts_per_leaf;
  NodeContainer hosts, leafs, spins;
  hosts.Create(H); leafs.Create(leaves); spins.Create(spines);
  InternetStackHelper stack;
  stack.Install(hosts); stack.Install(leafs); stack.Install(spins);

  PointToPointHelper p2p;
  p2p.SetDeviceAttribute("DataRate", DataRateValue(DataRate((uint64_t)(gbps * 1e9))));
  p2p.SetDeviceAttribute("Mtu", UintegerValue(mtu));
  p2p.SetChannelAttribute("Delay", TimeValue(NanoSeconds((int64_t)latency_ns)));
  p2p.SetQueue("ns3::DropTailQueue<Packet>", "MaxSize",
               QueueSizeValue(QueueSize(QueueSizeUnit::PACKETS, queue_packets)));

  Ipv4AddressHelper addr;
  addr.SetBase("10.0.0.0", "255.255.255.252");
  TrafficControlHelper tch;
  NetDeviceContainer all;
  // host h -- leaf: interface 1 on the host, leaf interface (1 + local index)
  std::vector<Ipv4Address> leaf_side_of_host(H);
  for (int h = 0; h < H; ++h) {
    NetDeviceContainer d = p2p.Install(hosts.Get(h), leafs.Get(h / hosts_per_leaf));
    Ipv4InterfaceContainer ifc = addr.Assign(d);
    addr.NewNetwork();
    leaf_side_of_host[h] = ifc.GetAddress(1);
    // a host NIC backs up into the host instead of dropping (Linux's qdisc and TSQ do that)
    DynamicCast<PointToPointNetDevice>(d.Get(0))->GetQueue()->SetMaxSize(QueueSize(QueueSizeUnit::PACKETS, 100000));
    all.Add(d);
  }
  // leaf l -- spine s: leaf interface (1 + hosts_per_leaf + s), spine interface (1 + l)
  std::vector<Ipv4Address> spine_side(leaves * spines), leaf_side(leaves * spines);
  for (int l = 0; l < leaves; ++l)
    for (int s = 0; s < spines; ++s) {
      NetDeviceContainer d = p2p.Install(leafs.Get(l), spins.Get(s));
      Ipv4InterfaceContainer ifc = addr.Assign(d);
      addr.NewNetwork();
      leaf_side[l * spines + s] = ifc.GetAddress(0);
      d.Get(0)->TraceConnectWithoutContext("MacTx", MakeBoundCallback(&OnUplinkTx, l * spines + s));
      spine_side[l * spines + s] = ifc.GetAddress(1);
      all.Add(d);
    }
  tch.Uninstall(all);  // packets go straight to the drop-tail device queues
  for (uint32_t i = 0; i < all.GetN(); ++i)
    all.Get(i)->GetNode()->GetObject<TrafficControlLayer>()->TraceConnectWithoutContext(
        "Drop", MakeCallback(&OnTcDrop));
  for (uint32_t i = 0; i < all.GetN(); ++i)
    DynamicCast<PointToPointNetDevice>(all.Get(i))->GetQueue()->TraceConnectWithoutContext("Drop", MakeCallback(&OnDrop));
  Ipv4GlobalRoutingHelper::PopulateRoutingTables();

  // per-spine aliases of every host and the static routes that pin them to their spine
  Ipv4StaticRoutingHelper srh;
  for (int h = 0; h < H; ++h) {
    int l = h / hosts_per_leaf, j = h % hosts_per_leaf;
    Ptr<Ipv4> ip = hosts.Get(h)->GetObject<Ipv4>();
    for (int s = 0; s < spines; ++s)
      ip->AddAddress(1, Ipv4InterfaceAddress(Alias(s, l, j), Ipv4Mask("255.255.255.255")));
    srh.GetStaticRouting(ip)->AddNetworkRouteTo(Ipv4Address("11.0.0.0"), Ipv4Mask("255.0.0.0"),
                                                 leaf_side_of_host[h], 1);
  }
  for (int l = 0; l < leaves; ++l) {
    Ptr<Ipv4StaticRouting> r = srh.GetStaticRouting(leafs.Get(l)->GetObject<Ipv4>());
    for (int s = 0; s < spines; ++s) {
      r->AddNetworkRouteTo(Ipv4Address((11u << 24) | ((uint32_t)s << 16)), Ipv4Mask("255.255.0.0"),
                           spine_side[l * spines + s], 1 + hosts_per_leaf + s);
      for (int j = 0; j < hosts_per_leaf; ++j) {
        Ipv4Address host_addr = hosts.Get(l * hosts_per_leaf + j)->GetObject<Ipv4>()->GetAddress(1, 0).GetLocal();
        r->AddHostRouteTo(Alias(s, l, j), host_addr, 1 + j);
      }
    }
  }
  for (int s = 0; s < spines; ++s) {
    Ptr<Ipv4StaticRouting> r = srh.GetStaticRouting(spins.Get(s)->GetObject<Ipv4>());
    for (int l = 0; l < leaves; ++l)
      r->AddNetworkRouteTo(Ipv4Address((11u << 24) | ((uint32_t)s << 16) | ((uint32_t)l << 8)),
                           Ipv4Mask("255.255.255.0"), leaf_side[l * spines + s], 1 + l);
  }

  for (size_t c = 0; c < n; ++c) {
    int src = conn_src[c], dst = conn_dst[c], sp = conn_spine[c];
    uint16_t port = (uint16_t)(1024 + c);
    Ptr<Socket> listen = Socket::CreateSocket(hosts.Get(dst), TcpSocketFactory::GetTypeId());
    listen->Bind(InetSocketAddress(Ipv4Address::GetAny(), port));
    listen->Listen();
    listen->SetAcceptCallback(MakeNullCallback<bool, Ptr<Socket>, const Address&>(),
                              MakeBoundCallback(&OnAccept, (int)c));
    Ptr<Socket> tx = Socket::CreateSocket(hosts.Get(src), TcpSocketFactory::GetTypeId());
    Ipv4Address to, from;
    if (sp >= 0) {
      to = Alias(sp, dst / hosts_per_leaf, dst % hosts_per_leaf);
      from = Alias(sp, src / hosts_per_leaf, src % hosts_per_leaf);
    } else {
      to = hosts.Get(dst)->GetObject<Ipv4>()->GetAddress(1, 0).GetLocal();
      from = hosts.Get(src)->GetObject<Ipv4>()->GetAddress(1, 0).GetLocal();
    }
    tx->Bind(InetSocketAddress(from, 0));
    tx->SetConnectCallback(MakeBoundCallback(&OnConnected, (int)c), MakeBoundCallback(&OnConnectFailed, (int)c));
    tx->SetSendCallback(MakeBoundCallback(&OnSendSpace, (int)c));
    tx->TraceConnectWithoutContext("CongState", MakeCallback(&OnCongState));
    tx->Connect(InetSocketAddress(to, port));
    g_tx.push_back(tx);
  }
  Simulator::Stop(Seconds(stop_s));
  Simulator::Run();
  Simulator::Destroy();
  g_tx.clear();
  return g_res;
}
}  // namespace nasfleet_pkt
"""

_NS3 = None


def _ns3():
    """cppyy's handle on the compiled scenario (ns-3 loads once per process, ~15 s)."""
    global _NS3
    if _NS3 is None:
        from ns import ns  # noqa: F401  (loads the ns-3 libraries and headers into cppyy)
        import cppyy

        cppyy.cppdef(SCENARIO_CPP)
        _NS3 = cppyy.gbl.nasfleet_pkt
    return _NS3


def run_ns3(leaves: int, spines: int, hosts: int, plan: PacketPlan, spray: bool, stop_s: float = 2.0,
            rng_run: int = 1) -> dict:
    """One collective in ns-3; CCT and what TCP went through."""
    cpp = _ns3()
    import cppyy

    vec_int, vec_u64 = cppyy.gbl.std.vector["int"], cppyy.gbl.std.vector["uint64_t"]
    step_ptr = np.r_[0, np.cumsum([len(c) for c, _ in plan.steps])]
    conns = np.concatenate([c for c, _ in plan.steps])
    sizes = np.concatenate([b for _, b in plan.steps])
    started = time.perf_counter()
    res = cpp.Run(leaves, spines, hosts, GBPS, LATENCY_NS, QUEUE_PACKETS, MTU_BYTES, SEGMENT_BYTES,
                  SOCKET_BUFFER_BYTES, MIN_RTO_US, spray,
                  vec_int(plan.conn_src.tolist()), vec_int(plan.conn_dst.tolist()), vec_int(plan.conn_spine.tolist()),
                  vec_int(step_ptr.tolist()), vec_int(conns.tolist()), vec_u64([int(b) for b in sizes]),
                  stop_s, rng_run, TCP)
    wall = time.perf_counter() - started
    ends = np.array(list(res.step_end_s))
    finished = bool(res.finished) and len(ends) == len(plan.steps)
    return {
        "cct_s": float(ends[-1] - res.start_s) if finished else float("nan"),
        "step_s": np.diff(np.r_[res.start_s, ends]).tolist() if finished else [],
        "drops": int(res.drops),
        "fast_recoveries": int(res.fast_recoveries),
        "timeouts": int(res.timeouts),
        "connections": plan.num_connections,
        "uplink_bytes": np.array(list(res.uplink_bytes)),
        "wall_s": wall,
    }


def cells(quick: bool) -> list[dict]:
    fabrics = [(4, 4, 4)] if quick else [(4, 4, 4), (8, 8, 8)]
    out = []
    for leaves, spines, hosts in fabrics:
        sizes = (1 * MiB, 4 * MiB) if quick else ((1 * MiB, 4 * MiB, 16 * MiB) if leaves == 4 else (1 * MiB, 4 * MiB))
        for kind, algorithm in WORKLOADS:
            for size in sizes:
                for routing in ROUTINGS:
                    out.append(dict(leaves=leaves, spines=spines, hosts=hosts, collective=kind, algorithm=algorithm,
                                    size_bytes=size, routing=routing))
    return out


def run_cell(cell: dict) -> dict:
    topo = leaf_spine(cell["leaves"], cell["spines"], cell["hosts"], gbps=GBPS, latency_ns=LATENCY_NS)
    ranks = topo.num_hosts
    coll = build_collective(cell["collective"], ranks=ranks, size_bytes=cell["size_bytes"], algorithm=cell["algorithm"])
    model = simulate(topo, coll, routing=cell["routing"], fidelity="flow", seed=0)
    analytical = simulate(topo, coll, routing=cell["routing"], fidelity="analytical", seed=0)
    plan = packet_plan(topo, coll, cell["routing"], seed=0)
    packet = run_ns3(cell["leaves"], cell["spines"], cell["hosts"], plan, spray=cell["routing"] == "spray")
    # Did ns-3 put the model's bytes on every leaf-to-spine link? (its counts include headers and ACKs)
    first_up = 2 * topo.num_hosts
    model_up = model.link_bytes_total()[first_up : first_up + topo.leaves * topo.spines]
    ns3_up = packet.pop("uplink_bytes")
    used = model_up > 0
    uplink_dev = float(np.max(np.abs(ns3_up[used] / model_up[used] - 1))) if used.any() else 0.0
    return {
        **cell,
        "fabric": f"{cell['leaves']}x{cell['spines']}x{cell['hosts']}",
        "ranks": ranks,
        "steps": coll.num_steps,
        "model_cct_s": model.completion_time_s,
        "analytical_cct_s": analytical.completion_time_s,
        "model_subflows": model.subflows,
        "ns3_cct_s": packet["cct_s"],
        "rel_diff": packet["cct_s"] / model.completion_time_s - 1.0,
        "uplink_bytes_max_rel_dev": uplink_dev,
        "ns3_step_s": packet["step_s"],
        "model_step_s": model.step_times_s().tolist(),
        **{f"ns3_{k}": v for k, v in packet.items() if k not in ("cct_s", "step_s")},
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| fabric | collective | size | routing | ns-3 CCT (ms) | model CCT (ms) | ns-3 / model − 1 | drops | fast rec. | RTOs |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "all-to-all" if r["collective"] == "alltoall" else f"all-reduce {r['algorithm']}"
        lines.append(
            f"| {r['fabric']} | {name} | {r['size_bytes'] // MiB} MiB | {r['routing']} | {r['ns3_cct_s'] * 1e3:.3f} | "
            f"{r['model_cct_s'] * 1e3:.3f} | {r['rel_diff'] * 100:+.1f}% | {r['ns3_drops']} | "
            f"{r['ns3_fast_recoveries']} | {r['ns3_timeouts']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fabrics = list(dict.fromkeys(r["fabric"] for r in rows))
    fig, axes = plt.subplots(1, len(fabrics), figsize=(5.2 * len(fabrics), 4.2), squeeze=False)
    markers = {"ecmp": "o", "split": "s", "spray": "^"}
    colors = {("allreduce", "ring"): "C0", ("allreduce", "halving-doubling"): "C1", ("alltoall", "pairwise"): "C2"}
    for ax, fabric in zip(axes[0], fabrics):
        part = [r for r in rows if r["fabric"] == fabric]
        for r in part:
            ax.scatter(r["model_cct_s"] * 1e3, r["ns3_cct_s"] * 1e3, marker=markers[r["routing"]],
                       color=colors[(r["collective"], r["algorithm"])], s=36, alpha=0.85)
        lo = min(min(r["model_cct_s"], r["ns3_cct_s"]) for r in part) * 1e3 * 0.8
        hi = max(max(r["model_cct_s"], r["ns3_cct_s"]) for r in part) * 1e3 * 1.25
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="ns-3 = model")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}".lstrip("0.")[:1] in "25" else ""))
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("flow model CCT (ms)")
        ax.set_ylabel("ns-3 CCT (ms)")
        ax.set_title(f"leaf-spine {fabric} (leaves×spines×hosts), {GBPS:g} Gb/s")
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=m, color="k", label=k) for k, m in markers.items()]
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=("all-to-all" if k[0] == "alltoall" else k[1]))
                for k, c in colors.items()]
    axes[0][0].legend(handles=handles, fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4x4 fabric, 1 and 4 MiB only")
    args = parser.parse_args()
    import ns  # noqa: F401  (fail before any work when ns-3 is absent)
    from importlib.metadata import version

    started = time.perf_counter()
    _ns3()
    load_s = time.perf_counter() - started
    rows = []
    for cell in cells(args.quick):
        row = run_cell(cell)
        rows.append(row)
        print(f"{row['fabric']} {row['algorithm']:>16} {row['size_bytes'] // MiB:>3} MiB {row['routing']:>6}: "
              f"ns-3 {row['ns3_cct_s'] * 1e3:8.3f} ms  model {row['model_cct_s'] * 1e3:8.3f} ms  "
              f"{row['rel_diff'] * 100:+6.1f}%  ({row['ns3_wall_s']:.1f} s)", flush=True)
    payload = {
        "machine": {"python": platform.python_version(), "ns3": version("ns3"), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
        "protocol": {"gbps": GBPS, "latency_ns_per_link": LATENCY_NS, "mtu_bytes": MTU_BYTES,
                     "tcp_segment_bytes": SEGMENT_BYTES, "queue_packets_per_port": QUEUE_PACKETS,
                     "socket_buffer_bytes": SOCKET_BUFFER_BYTES, "min_rto_us": MIN_RTO_US, "seed": 0,
                     "ns3_load_s": load_s, "total_wall_s": time.perf_counter() - started},
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "comm_vs_packet.json").write_text(json.dumps(payload, indent=1) + "\n")
    table = markdown(rows)
    (RESULTS / "comm_vs_packet.md").write_text(table)
    plot(rows, IMAGES / "comm_vs_packet.png")
    print(table)


if __name__ == "__main__":
    main()
