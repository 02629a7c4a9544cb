"""``trials.jsonl``: one JSON object per finished trial, appended so that no partial line
is ever taken for a result.

Write: under an exclusive ``fcntl.flock`` on the file, (a newline first if a crash left the
file without one, so a torn fragment stays on its own line), then the whole line with one
``os.write`` (looping only if the kernel writes less), then ``fsync``. Read: a line counts
only if it ends in a newline and parses as a JSON object with an ``id``; anything else (a
torn last line) is skipped. A trial may appear more than once (failed, then ok after a
re-run): the last line for an id wins.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from coarsegrad.errors import ConfigError
from coarsegrad.io.records import make_dir
from coarsegrad.io.results import TrialRecord

TRIALS_FILE = "trials.jsonl"
LOCK_FILE = ".sweep.lock"


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line, atomically with respect to readers and other writers."""
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # seal a torn fragment left by a crash
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record in file order (torn or malformed lines skipped)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:  # the piece after the last newline is torn or empty
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.append(record)
    return records


def latest_records(path: str | Path) -> dict[str, dict[str, Any]]:
    """The last complete record of each trial id."""
    return {record["id"]: record for record in read_records(path)}


def latest_trials(path: str | Path) -> dict[str, TrialRecord]:
    """:func:`latest_records` checked as :class:`TrialRecord` s (DataError naming the file if one is not)."""
    return {key: TrialRecord.from_dict(record, str(path)) for key, record in latest_records(path).items()}


@contextmanager
def exclusive_sweep(out: Path) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``out/.sweep.lock`` for the duration: one driver per
    sweep folder. Yields the lock's file descriptor, which pool workers must close
    (:func:`coarsegrad.parallel.init_worker`) so that only the driver holds the lock and
    the kernel releases it the moment the driver dies, even by ``kill -9``."""
    make_dir(out, "out")
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError("out", f"cannot open {out / LOCK_FILE} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("out", f"another sweep is running in {out}") from None
        yield fd
    finally:
        os.close(fd)
