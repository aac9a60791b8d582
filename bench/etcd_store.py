"""What one `EtcdStore.get` costs against a local etcd, over HTTP and over TLS with a client
certificate: wall time, the client's CPU and etcd's CPU per operation, and how many
connections the store opened (kept-alive connections: one per thread and member).

    python3 bench/etcd_store.py            # 2000 gets each way
    python3 bench/etcd_store.py --ops 500
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaos.topology.etcd import EtcdCluster
from launcher.rendezvous.backends.etcd import EtcdStore
from launcher.rendezvous.backends.etcd_transport import ClientTls


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(tls: bool, ops: int) -> str:
    with EtcdCluster(1, tls=tls) as etcd:
        client_tls = None
        if etcd.tls is not None:
            files = etcd.tls
            client_tls = ClientTls.load(
                cacert=files.ca, cert=files.client_cert, key=files.client_key
            )
        store = EtcdStore(
            etcd.endpoints,
            prefix="/bench/",
            protocol="https" if tls else "http",
            tls=client_tls,
        )
        store.set("k", "v")
        for _ in range(50):  # warm-up
            store.get("k")
        pid = etcd.member_pid(0)
        assert pid is not None
        wall, cpu, server = time.perf_counter(), time.process_time(), cpu_s(pid)
        for _ in range(ops):
            store.get("k")
        wall = (time.perf_counter() - wall) * 1000 / ops
        cpu = (time.process_time() - cpu) * 1000 / ops
        server = (cpu_s(pid) - server) * 1000 / ops
        opened = store._connections.opened
        store.close()
    name = "https + client cert" if tls else "http"
    return (
        f"{name:>20}: {wall:.3f} ms/op wall, {cpu:.3f} ms/op client CPU, "
        f"{server:.3f} ms/op etcd CPU, {opened} connection(s) for {ops + 51} requests"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    for tls in (False, True):
        print(measure(tls, args.ops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
