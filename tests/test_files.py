"""The shared file and token helpers: atomic writes, JSONL, locks, shift/pad/EOS."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scicot_jax.data.tokens import pad_rows, shift_right, with_eos
from scicot_jax.files import (
    atomic_open,
    atomic_write,
    read_json,
    read_jsonl,
    try_lock,
    write_jsonl,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write(path, "old\n")
    atomic_write(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_atomic_open_error_keeps_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_jsonl_round_trip_and_line_numbers(tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_jsonl(path, ({"i": i, "s": "é"} for i in range(3))) == 3
    assert "é" in path.read_text(encoding="utf-8")
    path.write_text(path.read_text() + "\n" + '{"i": 3}\n')  # a blank line is skipped
    assert [(n, d["i"]) for n, d in read_jsonl(path)] == [(1, 0), (2, 1), (3, 2), (5, 3)]


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n\xff\n')

    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=rf"{path}:2: invalid JSON"):
        list(read_jsonl(path, MyError))
    got = list(read_jsonl(path, keep_going=True))
    assert got[0] == (1, {"a": 1})
    assert [str(e) for _, e in got[1:]] == [
        f"{path}:2: invalid JSON (Expecting value)",
        f"{path}:3: not UTF-8 (invalid start byte at byte 0)",
    ]


def test_read_jsonl_complete_lines_stops_at_unfinished_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')  # the last line's newline not yet written
    assert [d for _, d in read_jsonl(path, complete_lines=True)] == [{"a": 1}]
    assert [d for _, d in read_jsonl(path)] == [{"a": 1}, {"a": 2}]


def test_try_lock_is_exclusive_until_closed(tmp_path):
    lock = tmp_path / ".lock"
    fd = try_lock(lock)
    assert fd is not None
    assert try_lock(lock) is None  # a second open file description is refused
    os.close(fd)
    fd2 = try_lock(lock)
    assert fd2 is not None
    os.close(fd2)


def test_token_helpers_use_the_given_ids():
    assert with_eos([5, 6, 7, 8], 3, eos_id=9) == [5, 6, 9]
    rows = pad_rows([[5, 6, 7], [8]], 2, pad_id=3)
    assert rows.dtype == np.int32 and rows.tolist() == [[5, 6], [8, 3]]
    tgt = np.array([[5, 6, 1], [7, 1, 0]])
    assert shift_right(tgt, start_id=4).tolist() == [[4, 5, 6], [4, 7, 1]]
    assert shift_right(np.array([5, 6]), start_id=0).tolist() == [0, 5]


def test_read_json_names_file_and_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": [1,\n 2]}')
    assert read_json(path) == {"a": [1, 2]}
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(KeyError, match=rf"{path}:2: invalid JSON"):
        read_json(path, KeyError)
    path.write_bytes(b'{"a":\n "\xff"}')
    with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 \(invalid start byte at byte 8\)"):
        read_json(path)
