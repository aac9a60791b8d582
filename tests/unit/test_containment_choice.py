"""The pure parts of worker containment: finding the cgroup2 hierarchy, the fallback's
reasons, the environment token, and the --containment flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.flags import parse_args
from launcher.resolve import resolve
from launcher.workers import cgroup, containment
from launcher.workers.descendants import with_token

HYBRID = """\
24 1 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd
"""
CONTAINER = "700 690 0:30 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n"


def test_the_unified_mount_is_found_on_a_hybrid_host_and_in_a_container() -> None:
    assert cgroup.unified_mount(HYBRID) == (Path("/sys/fs/cgroup/unified"), "/")
    assert cgroup.unified_mount(CONTAINER) == (Path("/sys/fs/cgroup"), "/docker/abc")
    assert cgroup.unified_mount("24 1 0:22 / /sys rw - sysfs sysfs rw\n") is None


def test_own_cgroup_is_the_v2_line() -> None:
    text = "4:memory:/a/b\n1:name=systemd:/user.slice\n0::/user.slice/session-3.scope\n"
    assert cgroup.own_cgroup(text) == "/user.slice/session-3.scope"
    assert cgroup.own_cgroup("4:memory:/a\n") is None


def test_a_directory_that_is_no_cgroup_is_refused_and_left_clean(tmp_path: Path) -> None:
    with pytest.raises(cgroup.CgroupUnavailable, match=r"neither cgroup\.kill nor cgroup\.freeze"):
        cgroup.CgroupTree.create(parent=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_cgroup_that_cannot_be_created_says_where(tmp_path: Path) -> None:
    with pytest.raises(cgroup.CgroupUnavailable, match="cannot create a cgroup in"):
        cgroup.CgroupTree.create(parent=tmp_path / "missing")


def test_insisting_on_cgroup_where_none_can_be_made_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroup, "own_cgroup_dir", lambda: tmp_path)
    with pytest.raises(containment.ContainmentError) as caught:
        containment.choose("cgroup")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("--containment cgroup: ")
    assert caught.value.exit_code == 2


def test_auto_falls_back_to_the_subreaper_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroup, "own_cgroup_dir", lambda: tmp_path)
    monkeypatch.setattr(containment.descendants, "become_subreaper", lambda: None)
    chosen = containment.choose("auto")
    assert chosen.mechanism == "subreaper" and chosen.cgroups is None
    assert "neither cgroup.kill nor cgroup.freeze" in chosen.reason


def test_the_token_list_keeps_an_outer_agents_token() -> None:
    assert with_token(None, "b") == "b"
    assert with_token("", "b") == "b"
    assert with_token("a", "b") == "a,b"


def test_containment_flag_and_its_pet_default(tmp_path: Path) -> None:
    script = str(tmp_path / "x.py")
    Path(script).write_text("")
    assert resolve(parse_args([script], environ={}), environ={}).containment == "auto"
    args = parse_args([script], environ={"PET_CONTAINMENT": "subreaper"})
    assert resolve(args, environ={}).containment == "subreaper"
    bad = parse_args([script], environ={"PET_CONTAINMENT": "jail"})
    with pytest.raises(ConfigError, match=r"--containment: unknown value 'jail'"):
        resolve(bad, environ={})
