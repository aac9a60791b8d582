"""Partition faults on real network namespaces, without a job: what a node can still reach.

A three-node NetnsTopology is brought up (no agents); a tiny TCP echo listener runs in every
node's namespace, and connects are made from inside the namespaces (`net_exec`). The fault
functions are called directly, as the runner calls them, and every test heals and tears down
on every path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.faults import FaultContext, fire, heal
from chaos.scenario.schema import Fault, Scenario, Topology, Trigger
from chaos.topology.netns import NetnsTopology, list_netns
from chaos.topology.view import JobView

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.usefixtures("netns_ready"),
]

PORT = 7000  # every namespace has its own port space
DROP_WAIT_S = 1.0  # how long a probe waits for a connect that a DROP swallows

LISTENER = """
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(64)
print("ready", flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

# Connects to every ADDR:PORT at once; prints {target: [outcome, seconds]}.
PROBE = """
import json, socket, sys, time
from concurrent.futures import ThreadPoolExecutor
wait_s = float(sys.argv[1])
def one(target):
    host, port = target.rsplit(":", 1)
    start = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=wait_s).close()
        outcome = "ok"
    except OSError as err:
        outcome = type(err).__name__
    return target, outcome, time.monotonic() - start
with ThreadPoolExecutor(len(sys.argv) - 2) as pool:
    print(json.dumps({t: [o, s] for t, o, s in pool.map(one, sys.argv[2:])}))
"""

# Opens a connection and checks the echo; on a line from stdin, uses it again and prints
# [outcome, seconds] (an established connection across the cut).
HOLD = """
import json, socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
conn.sendall(b"a")
assert conn.recv(1) == b"a"
print("connected", flush=True)
sys.stdin.readline()
conn.settimeout(float(sys.argv[3]))
start = time.monotonic()
try:
    conn.sendall(b"b")
    outcome = "ok" if conn.recv(1) == b"b" else "closed"
except OSError as err:
    outcome = type(err).__name__
print(json.dumps([outcome, time.monotonic() - start]), flush=True)
"""


class Net:
    """A netns topology with an echo listener in every node's namespace."""

    def __init__(self, topo: NetnsTopology) -> None:
        self.topo = topo
        self.procs: list[subprocess.Popen[str]] = []
        for index in topo.node_indices():
            listener = self.spawn(index, "-c", LISTENER, str(PORT))
            assert listener.stdout is not None and listener.stdout.readline() == "ready\n"

    def spawn(self, index: int, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*self.topo.net_exec(index), sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def target(self, index: int) -> str:
        return f"{self.topo.addr_of(index)}:{PORT}"

    def probe(self, src: int, *dsts: int) -> dict[int, tuple[str, float]]:
        """Connects from node `src` to each of `dsts`; node -> (outcome, seconds)."""
        done = subprocess.run(
            [*self.topo.net_exec(src), sys.executable, "-c", PROBE, str(DROP_WAIT_S)]
            + [self.target(d) for d in dsts],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        found = json.loads(done.stdout)
        return {d: (found[self.target(d)][0], found[self.target(d)][1]) for d in dsts}

    def outcomes(self, src: int, *dsts: int) -> dict[int, str]:
        return {d: outcome for d, (outcome, _) in self.probe(src, *dsts).items()}

    def rules(self, index: int) -> list[str]:
        """The rules (not policies) in node `index`'s filter table."""
        done = subprocess.run(
            [*self.topo.net_exec(index), "iptables", "-w", "-S"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return [line for line in done.stdout.splitlines() if not line.startswith("-P")]

    def close(self) -> None:
        for proc in self.procs:  # only the processes this class started
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    scenario = Scenario(name="partitions", topology=Topology(backend="netns", nodes=3))
    topo = NetnsTopology(scenario, run_dir=tmp_path, launcher="launcher", view=JobView(tmp_path))
    net: Net | None = None
    try:
        topo.up()
        net = Net(topo)
        yield net
    finally:
        if net is not None:
            net.close()
        topo.stop_all()
    assert not list_netns(topo.prefix)


def ctx_of(net: Net, tmp_path: Path) -> FaultContext:
    return FaultContext(scenario=net.topo.scenario, topology=net.topo, control_dir=tmp_path)


def partition(**fields: Any) -> Fault:
    return Fault(kind="partition", trigger=Trigger(kind="at_s", at_s=0.0), **fields)


def test_from_store_cuts_the_node_from_the_store_host_only(net: Net, tmp_path: Path) -> None:
    ctx = ctx_of(net, tmp_path)
    assert ctx.topology.store.host_node == 0
    assert net.outcomes(2, 0, 1) == {0: "ok", 1: "ok"}
    fault = partition(node=2, from_store=True)
    did = fire(fault, ctx)
    try:
        assert did["mode"] == "drop" and did["cuts"] == {"2": [0]}, did
        assert [r["exec"] for r in did["rules"]] == [net.topo.net_exec(2)] * 2, did
        assert did["rules"][0]["netns"] == " ".join(net.topo.net_exec(2))
        # Node 2 cannot reach the store host, nor it node 2; node 1 stays reachable both ways.
        assert net.outcomes(2, 0, 1) == {0: "TimeoutError", 1: "ok"}
        assert net.outcomes(0, 1, 2) == {1: "ok", 2: "TimeoutError"}
        assert net.outcomes(1, 0, 2) == {0: "ok", 2: "ok"}
    finally:
        healed = heal(fault, ctx, did)
    assert healed == {"node": 2, "rules_deleted": 2}, healed
    assert net.rules(2) == []  # exactly the inserted rules are gone
    assert net.outcomes(2, 0, 1) == {0: "ok", 1: "ok"}
    assert net.outcomes(0, 2) == {2: "ok"}


def test_groups_split_the_nodes(net: Net, tmp_path: Path) -> None:
    ctx = ctx_of(net, tmp_path)
    fault = partition(groups=((0, 1), (2,)))
    did = fire(fault, ctx)
    try:
        assert did["cuts"] == {"0": [2], "1": [2], "2": [0, 1]}, did
        assert len(did["rules"]) == 4 * 2  # four (node, peer) cuts, INPUT and OUTPUT each
        assert {r["node"] for r in did["rules"]} == {0, 1, 2}
        assert net.outcomes(0, 1, 2) == {1: "ok", 2: "TimeoutError"}
        assert net.outcomes(1, 0, 2) == {0: "ok", 2: "TimeoutError"}
        assert net.outcomes(2, 0, 1) == {0: "TimeoutError", 1: "TimeoutError"}
    finally:
        healed = heal(fault, ctx, did)
    assert healed["rules_deleted"] == 8 and "failed" not in healed, healed
    assert [net.rules(i) for i in (0, 1, 2)] == [[], [], []]
    assert net.outcomes(2, 0, 1) == {0: "ok", 1: "ok"}


@pytest.mark.parametrize("mode", ["drop", "reject"])
def test_reject_refuses_at_once_where_drop_hangs(net: Net, tmp_path: Path, mode: str) -> None:
    ctx = ctx_of(net, tmp_path)
    held = net.spawn(2, "-c", HOLD, net.topo.addr_of(0), str(PORT), str(DROP_WAIT_S))
    assert held.stdout is not None and held.stdin is not None
    assert held.stdout.readline() == "connected\n"  # established before the cut
    fault = partition(node=2, mode=mode)
    did = fire(fault, ctx)
    try:
        assert did["mode"] == mode and did["cuts"] == {"2": [0, 1]}, did
        assert len(did["rules"]) == (4 if mode == "reject" else 2) * 2
        out = net.probe(2, 0, 1)  # the cut node's own connects
        back = net.probe(0, 2)  # a peer's connects to the cut node
        held.stdin.write("go\n")
        held.stdin.flush()
        held_outcome, held_s = json.loads(held.stdout.readline())
    finally:
        healed = heal(fault, ctx, did)
    assert "failed" not in healed, healed
    for outcome, seconds in [*out.values(), *back.values()]:
        if mode == "reject":
            assert outcome in ("ConnectionRefusedError", "ConnectionResetError"), (out, back)
            assert seconds < 0.5, (out, back)
        else:
            assert outcome == "TimeoutError" and seconds >= DROP_WAIT_S * 0.9, (out, back)
    if mode == "reject":  # the established connection is reset, not left hanging
        assert held_outcome == "ConnectionResetError" and held_s < 0.5, (held_outcome, held_s)
    else:
        assert held_outcome == "TimeoutError", (held_outcome, held_s)
    assert net.rules(2) == []
    assert net.outcomes(2, 0, 1) == {0: "ok", 1: "ok"}


# Sends N bytes to the echo listener of ADDR:PORT and reads them back; prints the seconds.
PUMP = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
data = b"x" * int(sys.argv[3])
start = time.monotonic()
conn.sendall(data)
got = 0
while got < len(data):
    got += len(conn.recv(65536))
print(time.monotonic() - start, flush=True)
"""


def _pump_s(net: Net, src: int, dst: int, size: int) -> float:
    host, port = net.target(dst).rsplit(":", 1)
    done = subprocess.run(
        [*net.topo.net_exec(src), sys.executable, "-c", PUMP, host, port, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout)


def test_slow_link_caps_what_the_node_sends_and_the_heal_lifts_it(net: Net, tmp_path: Path) -> None:
    """1 Mbit/s out of node 1: 200 kB need about 1.6 s (they cross the cap once, the echo
    comes back uncapped); before and after, milliseconds."""
    ctx, size = ctx_of(net, tmp_path), 200_000
    before = _pump_s(net, 1, 0, size)
    fault = Fault(kind="slow_link", node=1, rate="1mbit", trigger=Trigger(kind="at_s", at_s=0.0))
    did = fire(fault, ctx)
    assert did["qdisc"] == "tbf" and did["rate"] == "1mbit", did
    try:
        slowed = _pump_s(net, 1, 0, size)
        other = _pump_s(net, 2, 0, size)  # another node's link is not capped
    finally:
        healed = heal(fault, ctx, did)
    after = _pump_s(net, 1, 0, size)
    assert healed["removed"], healed
    expected = size * 8 / 1_000_000
    assert 0.8 * expected < slowed < 1.5 * expected, (before, slowed, after)
    assert before < 0.3 and other < 0.3 and after < 0.3, (before, slowed, other, after)
