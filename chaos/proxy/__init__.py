"""A TCP proxy that speaks Toxiproxy 2.x's HTTP API: the harness's way to make a link slow,
lossy, reset or black-holed, and a stand-in for Toxiproxy that `toxiproxy-python` drives.

Toxiproxy's Go server cannot be installed here, so this is a re-implementation of its
contract (shared/reference/toxiproxy-api.md): the same routes, codes and JSON, the same
toxics with the same semantics, including the ones users trip over (toxics act on open
connections, a disabled proxy refuses connections and drops live ones, a timeout toxic
black-holes rather than closes). Layers, each importing only those below it:

    cli       `chaos proxy serve`
    server    ProxyServer (API + proxies on one asyncio loop), serve_in_thread -> ServerHandle
    api       routes -> collection, errors -> Toxiproxy's {"error", "status"}   (http: HTTP/1.1)
    collection  the API's operations on all proxies, in Toxiproxy's order of checks
    proxy     one listener, its live connections, toxics applied to them all
    link      one connection: two sockets, a fast path with no toxic, a pump through stages
    stages    what each toxic does to a link's bytes
    toxics, decode, address, errors   pure: specs and validation, Go-like JSON, addresses

`client` is a small standard-library client of the same API for the harness.
Standard library only: asyncio with protocols (no streams on the data path).
"""
