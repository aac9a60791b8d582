"""Reading error files (ours and torch's, intact or not) and writing the agent-side copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.failures.error_file import ErrorRecord, read_error_file, write_parent_error_file

# A worker file written by torch 2.13's @record under torchrun (rank 1 raised ValueError).
TORCH_CALLSTACK = (
    "Traceback (most recent call last):\n"
    '  File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/torch/distributed/elastic/'
    'multiprocessing/errors/__init__.py", line 367, in wrapper\n'
    "    return f(*args, **kwargs)\n"
    "           ^^^^^^^^^^^^^^^^^^\n"
    '  File "/tmp/fx/fail.py", line 7, in main\n'
    '    raise ValueError("boom from rank 1")\n'
    "ValueError: boom from rank 1\n"
)
TORCH_WORKER_FILE = json.dumps(
    {
        "message": {
            "message": "ValueError: boom from rank 1",
            "extraInfo": {"py_callstack": TORCH_CALLSTACK, "timestamp": "1795628606"},
        }
    }
)
# What torchrun wrote to its own TORCHELASTIC_ERROR_FILE for that failure (exit code 1).
TORCH_PARENT_FILE = TORCH_WORKER_FILE[:-2] + ', "errorCode": 1}}'


@pytest.fixture
def error_file(tmp_path: Path) -> Path:
    return tmp_path / "error.json"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def test_reads_torch_worker_file(error_file: Path) -> None:
    record = read_error_file(write(error_file, TORCH_WORKER_FILE))

    assert record == ErrorRecord(
        message="ValueError: boom from rank 1",
        traceback=TORCH_CALLSTACK,
        timestamp=1795628606,
        raw=json.loads(TORCH_WORKER_FILE),
    )
    assert not record.is_flat


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_error_file(tmp_path / "absent.json") is None
    assert read_error_file(tmp_path / "no_dir" / "absent.json") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (TORCH_WORKER_FILE[:100].encode(), "invalid JSON"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'"just text"', "expected a JSON object, found str"),
    ],
)
def test_corrupt_file_gives_record_saying_why(
    error_file: Path, content: bytes, reason: str
) -> None:
    record = read_error_file(write(error_file, content))

    assert record is not None
    assert record.message.startswith(f"error file {error_file} is unreadable: ")
    assert reason in record.message
    assert (record.traceback, record.timestamp, record.raw) == (None, 0, {})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [({"timestamp": 5}, "no 'message' field"), ({"message": 3}, "not text or object")],
)
def test_object_without_usable_message_is_unreadable(
    error_file: Path, raw: dict[str, Any], reason: str
) -> None:
    record = read_error_file(write(error_file, json.dumps(raw)))

    assert record is not None
    assert "is unreadable" in record.message
    assert reason in record.message
    assert record.raw == raw


def test_directory_in_place_of_file_is_unreadable(error_file: Path) -> None:
    error_file.mkdir()

    record = read_error_file(error_file)

    assert record is not None
    assert "is unreadable: IsADirectoryError" in record.message


def test_flat_shape(error_file: Path) -> None:
    raw = {"message": "worker ran out of\nmemory", "timestamp": 1700000000}

    record = read_error_file(write(error_file, json.dumps(raw)))

    assert record == ErrorRecord(
        message="worker ran out of\nmemory", traceback=None, timestamp=1700000000, raw=raw
    )
    assert record.is_flat


def test_flat_shape_without_timestamp(error_file: Path) -> None:
    record = read_error_file(write(error_file, '{"message": "oops"}'))

    assert record is not None
    assert (record.message, record.timestamp) == ("oops", 0)


def test_nested_timestamp_falls_back_to_top_level_then_zero(error_file: Path) -> None:
    top = {"message": {"message": "E: x", "extraInfo": {}}, "timestamp": 1700000001}
    bare = {"message": {"message": "E: x"}}

    top_record = read_error_file(write(error_file, json.dumps(top)))
    bare_record = read_error_file(write(error_file, json.dumps(bare)))

    assert top_record is not None
    assert bare_record is not None
    assert top_record.timestamp == 1700000001
    assert (bare_record.timestamp, bare_record.traceback) == (0, None)


def test_nested_without_inner_message_shows_not_available(error_file: Path) -> None:
    record = read_error_file(write(error_file, '{"message": {"extraInfo": {"py_callstack": 7}}}'))

    assert record is not None
    assert (record.message, record.traceback) == ("<N/A>", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", 1700000000),
        (" 1700000000\n", 1700000000),
        (1700000000, 1700000000),
        (1700000000.9, 1700000000),
        ("1700000000.9", 1700000000),
        ("soon", 0),
        ("nan", 0),
        ("1e999", 0),
        (-5, 0),
        (True, 0),
        (None, 0),
        ([1], 0),
    ],
)
def test_timestamp_parsing(error_file: Path, value: object, expected: int) -> None:
    raw = {"message": {"message": "E: x", "extraInfo": {"timestamp": value}}}

    record = read_error_file(write(error_file, json.dumps(raw)))

    assert record is not None
    assert record.timestamp == expected


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["message", "extraInfo", "py_callstack", "timestamp", "x"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_reading_never_raises(error_file: Path, content: bytes) -> None:
    record = read_error_file(write(error_file, content))

    assert isinstance(record, ErrorRecord)
    assert isinstance(record.message, str)
    assert record.timestamp >= 0


def test_parent_copy_is_byte_identical_to_torchruns(tmp_path: Path, error_file: Path) -> None:
    record = read_error_file(write(error_file, TORCH_WORKER_FILE))
    assert record is not None
    dst = tmp_path / "parent.json"

    write_parent_error_file(record, dst, exitcode=1)

    assert dst.read_text() == TORCH_PARENT_FILE
    assert record.raw == json.loads(TORCH_WORKER_FILE), "the record itself must not change"


def test_parent_copy_keeps_signal_exit_code(tmp_path: Path, error_file: Path) -> None:
    record = read_error_file(write(error_file, TORCH_WORKER_FILE))
    assert record is not None
    dst = tmp_path / "parent.json"

    write_parent_error_file(record, dst, exitcode=-9)

    assert json.loads(dst.read_text())["message"]["errorCode"] == -9


def test_parent_copy_without_code_for_zero_or_flat(tmp_path: Path) -> None:
    nested = ErrorRecord(message="E: x", raw={"message": {"message": "E: x"}})
    flat = ErrorRecord(message="oops", raw={"message": "oops", "timestamp": 3})

    write_parent_error_file(nested, tmp_path / "nested.json", exitcode=0)
    write_parent_error_file(flat, tmp_path / "flat.json", exitcode=2)

    assert json.loads((tmp_path / "nested.json").read_text()) == nested.raw
    assert json.loads((tmp_path / "flat.json").read_text()) == flat.raw


def test_parent_copy_replaces_existing_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    dst = tmp_path / "parent.json"
    dst.write_text("x" * 10_000)
    record = ErrorRecord(message="E: x", raw={"message": {"message": "E: x"}})

    write_parent_error_file(record, dst, exitcode=3)

    assert json.loads(dst.read_text()) == {"message": {"message": "E: x", "errorCode": 3}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parent.json"]


def test_parent_copy_of_unreadable_file_uses_nested_shape(tmp_path: Path, error_file: Path) -> None:
    record = read_error_file(write(error_file, b"{trunc"))
    assert record is not None
    dst = tmp_path / "parent.json"

    write_parent_error_file(record, dst, exitcode=1)

    assert json.loads(dst.read_text()) == {
        "message": {"message": record.message, "extraInfo": {"timestamp": "0"}, "errorCode": 1}
    }
    reread = read_error_file(dst)
    assert reread is not None
    assert reread.message == record.message


def test_parent_copy_round_trips(tmp_path: Path, error_file: Path) -> None:
    record = read_error_file(write(error_file, TORCH_WORKER_FILE))
    assert record is not None
    dst = tmp_path / "parent.json"

    write_parent_error_file(record, dst, exitcode=1)
    copied = read_error_file(dst)

    assert copied is not None
    assert (copied.message, copied.traceback, copied.timestamp) == (
        record.message,
        record.traceback,
        record.timestamp,
    )


def test_parent_copy_into_missing_directory_raises(tmp_path: Path) -> None:
    record = ErrorRecord(message="E: x", raw={"message": {"message": "E: x"}})

    with pytest.raises(FileNotFoundError):
        write_parent_error_file(record, tmp_path / "nope" / "parent.json", exitcode=1)
