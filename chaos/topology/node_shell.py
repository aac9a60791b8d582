"""The process tree of a docker node: docker-init (PID 1), a small shell, the agent.

The agent used to be docker-init's own child. Then a dead agent ended the container: docker-init
exited with it and the kernel killed everything left in the PID namespace, so a launcher that
orphans its workers (torchrun on SIGKILL) could not be caught on this backend. The shell keeps
the container up instead: it runs the agent, writes the agent's exit status to `agent.rc` in the
node's directory as soon as it has one, and stays while any other process of the container is
alive (orphans are reparented to docker-init, which reaps them). The harness reads the node's
exit from `agent.rc` and sees leftovers exactly as on the local and netns backends; teardown
removes the container either way.
"""

from __future__ import annotations

import time
from pathlib import Path

from chaos.topology import procs

RC_FILE = "agent.rc"

# sh -c SCRIPT node AGENT_ARGV...; CHAOS_NODE_DIR is in the container's environment, and
# CHAOS_WAIT_FOR, when set, is the unix socket of the node's store-link proxy: the agent starts
# once it exists (at most 10 s), so its first connection to the store goes through the proxy.
# `wait` returns early when a trapped signal arrives: loop until the agent is reaped. The
# shell's own `sleep`s are its children, never the agent's: they are not part of the job.
SCRIPT = r"""
d=$CHAOS_NODE_DIR
n=0
while [ -n "$CHAOS_WAIT_FOR" ] && [ ! -S "$CHAOS_WAIT_FOR" ] && [ $n -lt 500 ]; do
  sleep 0.02; n=$((n+1))
done
"$@" >>"$d/stdout.log" 2>>"$d/stderr.log" &
agent=$!
trap 'kill -TERM "$agent" 2>/dev/null' TERM INT
while :; do
  wait "$agent"; rc=$?
  kill -0 "$agent" 2>/dev/null || break
done
echo "$rc" >"$d/agent.rc.part" && mv -f "$d/agent.rc.part" "$d/agent.rc"
while :; do
  others=
  for p in /proc/[0-9]*; do
    case "${p#/proc/}" in 1|$$) ;; *) others=1 ;; esac
  done
  [ -z "$others" ] && exit "$rc"
  sleep 0.1
done
"""


def command(agent_argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", SCRIPT, "node", *agent_argv]


def wait_agent(init_pid: int, timeout_s: float) -> tuple[procs.ProcId, procs.ProcId] | None:
    """(shell, agent) once the shell's child has exec'd the agent; None if the container
    ended first (e.g. an image without python3: the exec fails, the shell exits)."""
    deadline = time.monotonic() + timeout_s
    init_comm = procs.comm(init_pid)
    while time.monotonic() < deadline:
        shells = [kid for kid in procs.children(init_pid) if procs.comm(kid) != init_comm]
        if shells:
            shell = shells[0]
            shell_comm = procs.comm(shell)
            agents = [kid for kid in procs.children(shell) if procs.comm(kid) != shell_comm]
            if agents and shell_comm is not None:
                ids = procs.identify(shell), procs.identify(agents[0])
                if ids[0] is not None and ids[1] is not None and procs.comm(agents[0]):
                    return ids[0], ids[1]
            if shell_comm is None:
                return None  # the shell is gone: so is the agent
        if procs.proc_start(init_pid) is None:
            return None
        time.sleep(0.005)  # nothing to block on: the processes are forked inside the container
    return None


def agent_rc(node_dir: Path) -> int | None:
    """The agent's exit status as its shell saw it (128 + N for a signal), once it exited."""
    try:
        text = (node_dir / RC_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None
