"""The worker's parsing, cancel and kill handling, against a tiny fake ``engine`` package.

The fake speaks the engine's JSON-lines contract in a few scripted ways, so every ending of a run
(result, error, crash, signal, cancel, a process that ignores SIGTERM) is exercised in seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List

import pytest

from slick_plugin.progress_text import ProgressEvent, TimeLeft, describe
from slick_plugin.engine_runner import CANCEL_GRACE_S, LOW_PRIORITY_NICE, EngineCommand, EngineRunner, Status

FAKE_ENGINE = r'''
import json, os, signal, sys, time

def say(**event):
    print(json.dumps(event), flush=True)

args = sys.argv[1:]
assert args[0] == "--jsonl", args
scenario = args[1]
if scenario == "ok":
    say(event="log", message="starting")
    print("a line that is not JSON", flush=True)
    for done in range(1, 4):
        say(event="progress", stage="tiles", done=done, total=3, message="")
    say(event="result", data={"n_slicks": 2, "cwd": os.getcwd(), "unbuffered": os.environ.get("PYTHONUNBUFFERED")})
elif scenario == "input-error":
    say(event="error", kind="InputError", message="The scene has no CRS. Assign one.")
    sys.exit(2)
elif scenario == "crash":
    print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr)
    sys.exit(1)
elif scenario == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
elif scenario == "no-torch":
    print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr)
    sys.exit(1)
elif scenario == "silent":
    pass
elif scenario == "priority":
    import threading
    niceness = {}
    thread = threading.Thread(
        target=lambda: niceness.update(thread=os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    thread.start()
    thread.join()
    with open("/proc/self/autogroup") as group:  # e.g. "/autogroup-42 nice 10"
        niceness.update(autogroup=int(group.read().split()[-1]))
    say(event="result", data=dict(niceness, main=os.getpriority(os.PRIO_PROCESS, 0)))
elif scenario in ("slow", "stubborn"):
    stop = []
    if scenario == "slow":
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say(event="progress", stage="tiles", done=0, total=100, message="")
    for done in range(1, 1000):
        time.sleep(0.05)
        if stop:
            say(event="cancelled")
            sys.exit(130)
        say(event="progress", stage="tiles", done=min(done, 99), total=100, message="")
'''


def fake_runner(folder: Path) -> EngineRunner:
    """A runner whose engine is the fake above, written into ``folder``."""
    package = folder / "engine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_ENGINE)
    return EngineRunner(sys.executable, folder)


@pytest.fixture
def runner(tmp_path: Path) -> EngineRunner:
    return fake_runner(tmp_path)


def test_result_progress_and_logs_are_parsed(runner: EngineRunner) -> None:
    events: List[ProgressEvent] = []
    logs: List[str] = []
    result = runner.run(EngineCommand("ok"), on_progress=events.append, on_log=logs.append)
    assert result.status is Status.SUCCEEDED
    assert result.data["n_slicks"] == 2
    assert Path(result.data["cwd"]) == runner.root and result.data["unbuffered"] == "1"
    assert [event.done for event in events] == [1, 2, 3] and events[-1].percent == 100
    assert logs == ["starting", "a line that is not JSON"]


def test_error_event_is_the_failure_message(runner: EngineRunner) -> None:
    result = runner.run(EngineCommand("input-error"))
    assert result.status is Status.FAILED
    assert result.message == "The scene has no CRS. Assign one."


@pytest.mark.parametrize("scenario, expected", [
    ("crash", "exit code 1"),
    ("oom", "smaller tile size or the CPU device"),
    ("no-torch", "lacks a package"),
    ("silent", "without a result"),
])
def test_failures_without_error_event_say_why(runner: EngineRunner, scenario: str, expected: str) -> None:
    result = runner.run(EngineCommand(scenario))
    assert result.status is Status.FAILED
    assert expected in result.message


def test_cancel_stops_the_engine_within_a_second(runner: EngineRunner) -> None:
    started = time.monotonic()
    events: List[ProgressEvent] = []
    result = runner.run(EngineCommand("slow"), on_progress=events.append,
                        is_cancelled=lambda: len(events) >= 3)
    assert result.status is Status.CANCELLED
    assert time.monotonic() - started < 5
    assert max(event.done for event in events) < 99


def test_an_engine_ignoring_sigterm_is_killed(runner: EngineRunner) -> None:
    events: List[ProgressEvent] = []
    cancel_at: List[float] = []

    def cancelled() -> bool:
        if len(events) >= 3 and not cancel_at:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    result = runner.run(EngineCommand("stubborn"), on_progress=events.append, is_cancelled=cancelled)
    assert result.status is Status.CANCELLED
    assert CANCEL_GRACE_S <= time.monotonic() - cancel_at[0] < CANCEL_GRACE_S + 2


def test_a_killed_engine_is_a_failure_with_the_signal(runner: EngineRunner) -> None:
    import os
    import signal

    pids: List[int] = []
    killed: List[bool] = []

    def progressed(event: ProgressEvent) -> None:
        if event.done >= 2 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(True)

    result = runner.run(EngineCommand("slow"), on_progress=progressed, on_started=pids.append)
    assert result.status is Status.FAILED
    assert result.message.startswith("The engine process stopped unexpectedly (signal 9, SIGKILL)")


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="needs Linux with autogroups")
def test_a_low_priority_engine_every_thread_it_starts_and_its_autogroup_are_niced(runner: EngineRunner) -> None:
    import os

    def our_autogroup() -> str:
        with open("/proc/self/autogroup") as group:
            return group.read()

    ours, our_group = os.getpriority(os.PRIO_PROCESS, 0), our_autogroup()
    low = min(ours + LOW_PRIORITY_NICE, 19)
    normal = runner.run(EngineCommand("priority"))
    niced = runner.run(EngineCommand("priority", low_priority=True))
    assert normal.data == {"main": ours, "thread": ours, "autogroup": 0}  # a new session's autogroup starts at 0
    assert niced.data == {"main": low, "thread": low, "autogroup": LOW_PRIORITY_NICE}
    assert (os.getpriority(os.PRIO_PROCESS, 0), our_autogroup()) == (ours, our_group)  # QGIS is left as it was


def test_a_missing_engine_python_says_how_to_fix_it(tmp_path: Path) -> None:
    result = EngineRunner(str(tmp_path / "no" / "python"), tmp_path).run(EngineCommand("doctor"))
    assert result.status is Status.FAILED
    assert "cannot be started" in result.message and "Fix:" in result.message


def test_time_left_follows_the_pace_of_the_stage() -> None:
    now = [0.0]
    estimate = TimeLeft(clock=lambda: now[0])
    assert estimate.update(ProgressEvent("tiles", 0, 10)) is None
    now[0] = 4.0
    left = estimate.update(ProgressEvent("tiles", 2, 10))
    assert left == pytest.approx(16.0)
    assert describe(ProgressEvent("tiles", 2, 10), left) == "tiles 2/10 – about 16 s left"
    assert estimate.update(ProgressEvent("polygons", 1, 5)) is None


def test_a_scene_path_with_spaces_quotes_and_shell_characters_reaches_the_engine_as_it_is(tmp_path: Path) -> None:
    """The engine gets an argument list, never a shell line: nothing in a file name is interpreted."""
    import shutil

    from .conftest import REPO, SAMPLE

    folder = tmp_path / "it's a \"test\" $(touch pwned) ø"
    folder.mkdir()
    scene = folder / "scène `touch pwned`; 'quoted'.tif"
    shutil.copy(SAMPLE / "raw_mosaic.tif", scene)
    result = EngineRunner(sys.executable, REPO).run(EngineCommand("info", (str(scene),)))
    assert result.ok, result.message
    assert result.data["path"] == str(scene) and result.data["width"] == 768
    assert not (REPO / "pwned").exists() and not (folder / "pwned").exists()
