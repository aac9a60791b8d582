"""Failure kinds: the worker's own, a peer's symptom, the agent's stop, a hang."""

from __future__ import annotations

import pytest

from launcher.failures.classify import FailureKind, classify, is_symptom

# Messages as the error file records them ("<Type>: <str(exc)>"). The gloo and store ones
# were provoked with torch 2.13 on loopback: a peer that destroyed its group or exited
# mid-collective, a recv that timed out, a store key never set, a store host killed, a
# rendezvous with a missing peer. The NCCL ones are as torch and NCCL word them (written from
# their sources, not provoked: no GPU here).
GLOO_CLOSED = (
    "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] "
    "Connection closed by peer [127.0.0.1]:31661. This is typically caused by a remote worker "
    "crashing. Check the logs of the remote worker before reporting an error. GLHF! "
    "\U0001f3d6\ufe0f"
)
SYMPTOMS = [
    GLOO_CLOSED,
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection reset by "
    "peer [10.0.0.2]:8174",
    "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc"
    ":78] Timed out waiting 5000ms for recv operation to complete",
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:589] Socket Timeout",
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:446] Application timeout "
    "caused pair closure",
    "DistStoreError: wait timeout after 1000ms, keys: /missing",
    "DistStoreError: Timed out after 3 seconds waiting for clients. 1/2 clients joined.",
    "DistNetworkError: Failed to recv, got 0 bytes. Connection was likely closed. Did the "
    "remote server shutdown or crash?",
    "DistNetworkError: Broken pipe",
    "torch.distributed.DistNetworkError: The client socket has timed out after 1000ms while "
    "trying to connect to (127.0.0.1, 58264).",
    "DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, remote "
    "process exited or there was a network error, NCCL version 2.21.5\nncclRemoteError: A call "
    "failed possibly due to a network error or a remote process exiting prematurely.",
    "DistBackendError: NCCL communicator was aborted on rank 3.",
    "DistBackendError: [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7,"
    " OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600012 milliseconds "
    "before timing out.",
    "RuntimeError: Rank 1 failed to pass monitoredBarrier in 30000 ms",
]
OWN = [
    "ValueError: boom from rank 1",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)",
    "DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, invalid usage, NCCL version "
    "2.21.5\nncclInvalidUsage: This usually reflects invalid usage of NCCL library.",
    "error file /tmp/x/error.json is unreadable: the file is empty",
    "KeyError: 'Connection'",
]


@pytest.mark.parametrize("message", SYMPTOMS)
def test_a_peer_gone_or_silent_is_a_symptom(message: str) -> None:
    assert is_symptom(message)
    assert classify(message=message, stopped_by_agent=False) is FailureKind.SYMPTOM


@pytest.mark.parametrize("message", OWN)
def test_a_workers_own_error_is_self(message: str) -> None:
    assert not is_symptom(message)
    assert classify(message=message, stopped_by_agent=False) is FailureKind.SELF


def test_no_error_file_is_self() -> None:
    # An exit code, or a signal the agent did not send: nothing says a peer caused it.
    assert classify(message=None, stopped_by_agent=False) is FailureKind.SELF


def test_stopped_by_the_agent_wins_over_its_error_file() -> None:
    # It wrote "Connection closed by peer" first, then the agent SIGTERMed it.
    assert classify(message=GLOO_CLOSED, stopped_by_agent=True) is FailureKind.STOPPED
    assert classify(message="ValueError: x", stopped_by_agent=True) is FailureKind.STOPPED
    assert classify(message=None, stopped_by_agent=True) is FailureKind.STOPPED


def test_a_hang_is_a_cause_although_the_agent_stopped_it() -> None:
    assert classify(message=None, stopped_by_agent=True, hung=True) is FailureKind.HANG
    assert classify(message=GLOO_CLOSED, stopped_by_agent=True, hung=True) is FailureKind.HANG


def test_blame_order() -> None:
    order = sorted(FailureKind, key=lambda k: k.blame_rank)
    assert [k.blame_rank for k in order] == [0, 0, 1, 2]
    assert order[-2:] == [FailureKind.SYMPTOM, FailureKind.STOPPED]
    assert FailureKind.SELF == "self"  # the event log's spelling
