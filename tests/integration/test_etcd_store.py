"""EtcdStore against REAL etcd servers (single member and 3-member clusters)."""

from __future__ import annotations

import base64
import http.client
import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from chaos.faults.intruder_stores import EtcdGateway
from chaos.topology.etcd import EtcdCluster, free_ports, http_json
from launcher.errors import ConfigError, RendezvousConnectionError, RendezvousError
from launcher.rendezvous.backends.etcd import EtcdStore
from launcher.rendezvous.backends.etcd_wire import parse_endpoints
from launcher.rendezvous.driver import Driver
from launcher.rendezvous.state import Assignment, JobOver, NodeInfo, Params, join

pytestmark = [pytest.mark.integration, pytest.mark.etcd]

T = TypeVar("T")
THREAD_TIMEOUT_S = 60.0


def unique_prefix() -> str:
    return f"/test/{uuid.uuid4().hex[:12]}/"


def count_keys(server: EtcdCluster, prefix: str) -> int:
    """How many keys start with `prefix`, asked of etcd directly (not through EtcdStore)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": b64(prefix), "range_end": b64(end), "count_only": True}
    reply = http_json(f"{server.client_url(0)}/v3/kv/range", body)
    return int(reply.get("count", 0))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def store(etcd_server: EtcdCluster) -> Iterator[EtcdStore]:
    etcd = EtcdStore(etcd_server.endpoints, prefix=unique_prefix(), timeout_s=10)
    yield etcd
    etcd.close()


def run_threads(count: int, target: Callable[[int], T]) -> list[T]:
    """Runs target(0..count-1) in threads released together; re-raises the first error."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=THREAD_TIMEOUT_S)
            results[index] = target(index)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


# -- single member: every operation ---------------------------------------------------------


def test_get_set_and_absent_keys(store: EtcdStore) -> None:
    assert store.get("a") is None
    store.set("a", "1")
    store.set("empty", "")
    assert store.get("a") == "1"
    assert store.get("empty") == ""  # an empty value is not an absent key
    store.set("a", "héllo {json: [1]}")
    assert store.get("a") == "héllo {json: [1]}"


def test_multi_get_and_multi_set(store: EtcdStore) -> None:
    assert store.multi_get([]) == []
    store.multi_set([])
    store.multi_set([("k1", "v1"), ("k2", ""), ("k1", "v1b")])  # a repeated key: last wins
    assert store.multi_get(["k1", "missing", "k2", "k1"]) == ["v1b", None, "", "v1b"]
    # More than etcd's 128 operations per txn: split into several txns, order kept.
    items = [(f"many/{i}", str(i)) for i in range(300)]
    store.multi_set(items)
    assert store.multi_get([key for key, _ in items]) == [value for _, value in items]


def test_compare_set(store: EtcdStore) -> None:
    assert store.compare_set("c", "x", "y") == ""  # absent, expected a value: no change
    assert store.get("c") is None
    assert store.compare_set("c", None, "first") == "first"
    assert store.compare_set("c", None, "second") == "first"
    assert store.compare_set("c", "wrong", "third") == "first"
    assert store.compare_set("c", "first", "third") == "third"
    store.set("e", "")
    assert store.compare_set("e", "", "filled") == "filled"
    assert store.compare_set("absent", "", "v") == ""  # "" is a value, not absence


def test_add(store: EtcdStore) -> None:
    assert store.add("n", 0) == 0
    assert store.get("n") is None  # reading a counter writes nothing
    assert store.add("n", 5) == 5
    assert store.add("n", -2) == 3
    assert store.add("n", 0) == 3
    assert store.get("n") == "3"  # decimal text, readable with get


def test_a_counter_reads_as_decimal_text_however_it_was_written(store: EtcdStore) -> None:
    store.set("legacy", "41")  # plain text, as a program without the counter layout writes
    assert store.add("legacy", 1) == 42
    assert store.add("legacy", 1) == 43
    assert store.add("legacy", -3) == 40
    store.add("fresh", 1)
    assert store.multi_get(["legacy", "fresh", "absent"]) == ["40", "1", None]


def test_another_program_following_the_documented_layout_shares_a_counter(
    etcd_server: EtcdCluster,
) -> None:
    prefix = unique_prefix()
    ours = EtcdStore(etcd_server.endpoints, prefix=prefix)
    host, port = etcd_server.endpoints[0]
    theirs = EtcdGateway(f"{host}:{port}", timeout_s=10, prefix=prefix)  # the chaos intruder
    assert (ours.add("seq", 1), theirs.add("seq", 1), ours.add("seq", 1)) == (1, 2, 3)
    assert (theirs.add("seq", -1), ours.get("seq")) == (2, "2")


def test_an_increment_is_one_txn_however_many_add_at_once(
    etcd_server: EtcdCluster, proxy: DroppingProxy
) -> None:
    prefix = unique_prefix()
    endpoints = [("127.0.0.1", proxy.server_port)]

    def adder(_: int) -> list[int]:
        etcd = EtcdStore(endpoints, prefix=prefix)
        try:
            return [etcd.add("seq", 1) for _ in range(10)]
        finally:
            etcd.close()

    before = proxy.forwarded
    results = run_threads(10, adder)
    assert sorted(v for values in results for v in values) == list(range(1, 101))
    # 100 txns and the 10 clients' marker clean-ups: no retries on contention
    assert proxy.forwarded - before == 110


def test_keys_live_under_the_prefix(etcd_server: EtcdCluster) -> None:
    prefix = unique_prefix()
    first = EtcdStore(etcd_server.endpoints, prefix=prefix)
    other = EtcdStore(etcd_server.endpoints, prefix=unique_prefix())
    first.set("k", "v")
    assert EtcdStore(etcd_server.endpoints, prefix=prefix).get("k") == "v"
    assert other.get("k") is None


def test_concurrent_adds_count_exactly(etcd_server: EtcdCluster) -> None:
    prefix = unique_prefix()

    def adder(_: int) -> list[int]:
        etcd = EtcdStore(etcd_server.endpoints, prefix=prefix)
        try:
            return [etcd.add("counter", 1) for _ in range(50)]
        finally:
            etcd.close()

    results = run_threads(8, adder)
    seen = sorted(value for values in results for value in values)
    assert seen == list(range(1, 401))  # every increment got its own value
    assert EtcdStore(etcd_server.endpoints, prefix=prefix).get("counter") == "400"


def test_concurrent_increments_and_decrements_balance(etcd_server: EtcdCluster) -> None:
    prefix = unique_prefix()

    def adder(index: int) -> None:
        etcd = EtcdStore(etcd_server.endpoints, prefix=prefix)
        try:
            for _ in range(20):
                etcd.add("spares", 1 if index % 2 == 0 else -1)
        finally:
            etcd.close()

    run_threads(6, adder)
    assert EtcdStore(etcd_server.endpoints, prefix=prefix).add("spares", 0) == 0


def test_concurrent_adds_through_one_shared_store(store: EtcdStore) -> None:
    results = run_threads(4, lambda _: [store.add("shared", 1) for _ in range(25)])
    assert sorted(v for values in results for v in values) == list(range(1, 101))


def test_compare_set_race_has_one_winner(etcd_server: EtcdCluster) -> None:
    prefix = unique_prefix()

    def contender(index: int) -> tuple[str, str]:
        etcd = EtcdStore(etcd_server.endpoints, prefix=prefix)
        return f"writer-{index}", etcd.compare_set("close", None, f"writer-{index}")

    outcomes = run_threads(8, contender)
    winners = [mine for mine, held in outcomes if mine == held]
    assert len(winners) == 1
    assert {held for _, held in outcomes} == {winners[0]}


# -- lost replies: retries never double-apply ---------------------------------------------


class DroppingProxy(http.server.ThreadingHTTPServer):
    """Forwards POSTs to etcd, then drops the replies to the next `drop` txns (applied, never
    answered): what a client sees when a member dies between applying and replying."""

    daemon_threads = True

    def __init__(self, target: tuple[str, int], drop: int) -> None:
        self.target, self.drop, self.forwarded = target, drop, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: DroppingProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        conn = http.client.HTTPConnection(*self.server.target, timeout=10)
        try:
            conn.request("POST", self.path, body=body)
            reply = conn.getresponse()
            status, data = reply.status, reply.read()
        finally:
            conn.close()
        with self.server.lock:
            self.server.forwarded += 1
            dropping = self.server.drop > 0 and self.path == "/v3/kv/txn"
            self.server.drop -= dropping
        if dropping:
            self.close_connection = True  # the request was applied; the reply is lost
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def proxy(etcd_server: EtcdCluster) -> Iterator[DroppingProxy]:
    server = DroppingProxy(etcd_server.endpoints[0], drop=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_add_whose_reply_was_lost_counts_once(
    etcd_server: EtcdCluster, proxy: DroppingProxy
) -> None:
    prefix = unique_prefix()
    # The proxy is tried first; after a lost reply the store fails over to the real member.
    etcd = EtcdStore([("127.0.0.1", proxy.server_port), etcd_server.endpoints[0]], prefix=prefix)
    assert etcd.add("n", 1) == 1
    proxy.drop = 1
    forwarded = proxy.forwarded
    assert etcd.add("n", 1) == 2  # the txn's reply is lost, the retry recognises its marker
    assert proxy.forwarded == forwarded + 1  # +1 is one txn: the one that was applied
    etcd = EtcdStore([("127.0.0.1", proxy.server_port), etcd_server.endpoints[0]], prefix=prefix)
    proxy.drop = 1
    forwarded = proxy.forwarded
    assert etcd.add("n", -1) == 1  # a compare-and-put, its reply lost: counted once too
    assert proxy.forwarded == forwarded + 2  # the read, and the txn that was applied
    assert EtcdStore([etcd_server.endpoints[0]], prefix=prefix).get("n") == "1"


def test_compare_set_whose_reply_was_lost_reports_the_win(
    etcd_server: EtcdCluster, proxy: DroppingProxy
) -> None:
    proxy.drop = 1
    endpoints = [("127.0.0.1", proxy.server_port), etcd_server.endpoints[0]]
    etcd = EtcdStore(endpoints, prefix=unique_prefix())
    assert etcd.compare_set("k", None, "mine") == "mine"
    assert proxy.forwarded == 1


# -- failures -----------------------------------------------------------------------------


def test_nothing_listening_fails_within_the_timeout() -> None:
    (port,) = free_ports(1)
    etcd = EtcdStore([("127.0.0.1", port)], timeout_s=1.0)
    began = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        etcd.get("k")
    assert time.monotonic() - began < 3.0
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "Connection refused" in message
    assert "\n" not in message


def test_a_rejected_request_fails_at_once(store: EtcdStore) -> None:
    began = time.monotonic()
    with pytest.raises(RendezvousError, match="request is too large") as info:
        store.set("big", "x" * 2_000_000)  # over etcd's 1.5 MiB request limit
    assert not isinstance(info.value, RendezvousConnectionError)
    assert time.monotonic() - began < 2.0  # not retried until the timeout


def test_a_server_that_is_not_etcd_fails_at_once() -> None:
    class NotEtcd(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_error(404, "no such API")

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        etcd = EtcdStore([("127.0.0.1", server.server_port)], timeout_s=10)
        with pytest.raises(RendezvousError, match=r"rejected /v3/kv/range: HTTP 404"):
            etcd.get("k")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node1", [("node1", 2379)]),
        ("node1:1234", [("node1", 1234)]),
        ("a:1, b:2,c", [("a", 1), ("b", 2), ("c", 2379)]),
        ("[::1]:2380,[fe80::1]", [("::1", 2380), ("fe80::1", 2379)]),
    ],
)
def test_parse_endpoints(text: str, expected: list[tuple[str, int]]) -> None:
    assert parse_endpoints(text) == expected


@pytest.mark.parametrize("text", ["", "a:b", "a:0", "a:70000", "a,,b", "http://a:1"])
def test_parse_endpoints_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="bad etcd endpoint"):
        parse_endpoints(text)


# -- a 3-member cluster -------------------------------------------------------------------


def test_cluster_survives_losing_the_leader(etcd_cluster: EtcdCluster) -> None:
    leader = etcd_cluster.leader_index()
    first, second = [i for i in range(3) if i != leader]
    eps = etcd_cluster.endpoints
    # Members are tried in the order given: some clients talk to the leader (its death is a
    # refused connection), some to a follower (which loses the proposals it forwarded).
    orders = [[leader, first, second], [first, leader, second], [second, first, leader]]
    prefix = unique_prefix()
    killed, stop = threading.Event(), threading.Event()
    before_kill, after_kill = threading.Semaphore(0), threading.Semaphore(0)

    def adder(order: list[int]) -> int:
        etcd = EtcdStore([eps[i] for i in order], prefix=prefix, timeout_s=20)
        count = 0
        while not stop.is_set():
            etcd.add("n", 1)
            count += 1
            (after_kill if killed.is_set() else before_kill).release()
        etcd.close()
        return count

    with ThreadPoolExecutor(len(orders)) as pool:
        futures = [pool.submit(adder, order) for order in orders]
        try:
            etcd = EtcdStore([eps[i] for i in orders[1]], prefix=prefix, timeout_s=20)
            etcd.set("before", "1")  # through a follower
            for _ in range(30):  # the adders made progress through the healthy cluster
                assert before_kill.acquire(timeout=30)
            etcd_cluster.kill_member(leader)
            killed.set()
            began = time.monotonic()
            etcd.set("after", "1")  # the follower stalls; the store moves on after 2 s
            failover_s = time.monotonic() - began
            assert etcd.compare_set("after", "1", "2") == "2"
            assert etcd.multi_get(["after", "before", "missing"]) == ["2", "1", None]
            for _ in range(30):  # the adders keep going through the survivors
                assert after_kill.acquire(timeout=30)
        finally:
            stop.set()
        counts = [future.result(timeout=THREAD_TIMEOUT_S) for future in futures]
    assert etcd.get("n") == str(sum(counts))  # no increment lost or counted twice
    assert etcd_cluster.leader_index() != leader
    assert failover_s < 6.0  # not etcd's own 7 s request timeout


def test_cluster_without_quorum_fails_within_the_timeout(etcd_cluster: EtcdCluster) -> None:
    etcd = EtcdStore(etcd_cluster.endpoints, prefix=unique_prefix(), timeout_s=2.0)
    etcd.set("k", "v")
    etcd_cluster.kill_member(0)
    etcd_cluster.kill_member(1)
    for op in (lambda: etcd.get("k"), lambda: etcd.add("n", 1), lambda: etcd.set("k", "w")):
        began = time.monotonic()
        with pytest.raises(RendezvousConnectionError) as info:
            op()
        assert 1.9 < time.monotonic() - began < 5.0
        message = str(info.value)
        for host, port in etcd_cluster.endpoints:
            assert f"{host}:{port}" in message
        assert "within 2s" in message and "last error" in message and "\n" not in message


# -- the real rendezvous protocol on etcd ---------------------------------------------------


def test_three_agents_rendezvous_through_etcd(etcd_server: EtcdCluster) -> None:
    run_id = uuid.uuid4().hex[:8]
    params = Params(run_id=run_id, min_nodes=3, max_nodes=3, max_restarts=0, join_timeout_s=30)
    prefix = unique_prefix()

    def agent(index: int) -> Assignment | JobOver:
        etcd = EtcdStore(etcd_server.endpoints, prefix=prefix, timeout_s=10)
        try:
            driver = Driver(etcd)
            me = NodeInfo(
                node_id=f"node{index}", addr=f"10.0.0.{index + 1}", master_port=29500, nproc=2
            )
            return driver.run(join(params, me, now=driver.now()))
        finally:
            etcd.close()

    results = run_threads(3, agent)
    assignments = [r for r in results if isinstance(r, Assignment)]
    assert len(assignments) == 3
    assert sorted(a.group_rank for a in assignments) == [0, 1, 2]
    assert sorted(a.base_rank for a in assignments) == [0, 2, 4]
    assert {(a.master_addr, a.master_port) for a in assignments} == {
        (assignments[0].master_addr, 29500)
    }
    assert {a.world_size for a in assignments} == {6}
    assert {a.group_world_size for a in assignments} == {3}
    assert {a.round for a in assignments} == {0}
    assert count_keys(etcd_server, prefix + "rdzv/") > 0
    assert count_keys(etcd_server, prefix + "_adds/") == 0  # close() removed the add markers
