"""The pure rendezvous core (see model.py for the key layout and the driving contract).

No I/O anywhere below: time and store replies come in, store operations go out. Both the
agent (launcher.rendezvous.dynamic) and the simulator (chaos.sim) drive these generators.
"""

from launcher.rendezvous.state.model import (
    EXCLUDED,
    FAILED,
    OK,
    Add,
    Assignment,
    CompareSet,
    Excluded,
    Feedback,
    Get,
    JobOver,
    Keys,
    MultiGet,
    MultiSet,
    NodeInfo,
    Op,
    Params,
    RendezvousTimeout,
    Set,
    Sleep,
    Step,
    round_of,
)
from launcher.rendezvous.state.protocol import bump, join
from launcher.rendezvous.state.running import (
    WatchState,
    check_round,
    declared_dead,
    finish,
    heartbeat,
    leave,
    mark_failed,
    report_failure,
)

__all__ = [
    "EXCLUDED",
    "FAILED",
    "OK",
    "Add",
    "Assignment",
    "CompareSet",
    "Excluded",
    "Feedback",
    "Get",
    "JobOver",
    "Keys",
    "MultiGet",
    "MultiSet",
    "NodeInfo",
    "Op",
    "Params",
    "RendezvousTimeout",
    "Set",
    "Sleep",
    "Step",
    "WatchState",
    "bump",
    "check_round",
    "declared_dead",
    "finish",
    "heartbeat",
    "join",
    "leave",
    "mark_failed",
    "report_failure",
    "round_of",
]
