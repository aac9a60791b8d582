"""torch's TCPStore, both ends, in the standard library (torch 2.13's wire protocol).

    protocol.py   the wire codec: bytes in, requests out, and the encoders (pure)
    state.py      what the server does with each request, without sockets (pure)
    server.py     StoreServer: a selector loop on one thread
    limits.py     what one client may make the server hold, and for how long
    drops.py      clients dropped for misbehaving: logged and reported, rate-limited
    client.py     StoreClient: one blocking connection that reconnects after a failure

Two users, so it lives in neither: the c10d rendezvous backend hosts and reaches the
rendezvous store with it (so the agent never imports torch, on one node or many), and the
agent serves the workers' bootstrap store (MASTER_ADDR:MASTER_PORT) with StoreServer, handed
to the rendezvous as a `ServeStore` (launcher/rendezvous/__init__.py). It imports nothing
else from the launcher. Where the servers listen is the rendezvous' choice
(launcher/rendezvous/addresses.py); the threat model is docs/security.md.
"""
