"""torchrun gets the scenario's launcher_args less the launcher's own extension flags."""

from __future__ import annotations

from chaos.topology.launcher_args import without_extensions


def test_extension_flags_are_dropped_with_their_values() -> None:
    args = ["--max-restarts", "2", "--hang-timeout", "5", "--hang_dump=py-spy"]
    args += ["--restart-grace", "3", "--containment=subreaper", "--monitor-interval", "0.1"]
    assert without_extensions(args) == ["--max-restarts", "2", "--monitor-interval", "0.1"]


def test_other_words_are_kept_as_they_are() -> None:
    args = ["--rdzv-conf", "join_timeout=5", "--log-dir", "hang-timeout", "--hang-timeouts"]
    assert without_extensions(args) == args
