"""Rendezvous store backends, each imported lazily by name (`etcd` needs no extra package).

etcd     EtcdStore: a real etcd (>= 3.4) cluster through its v3 JSON gateway, with failover
         across members (standard library only)
"""
