"""The one way the plugin runs engine work: a child process speaking JSON lines, ending as a RunResult.

The engine runs in its own Python (torch never enters QGIS), so a crash, an out-of-memory kill or a
hung GPU only ever ends one child process. ``EngineRunner.run`` blocks until that child is gone; the
dock calls it inside a QgsTask, Processing calls it directly inside ``processAlgorithm``.
Plain Python, no Qt, so its parsing, cancel and kill handling are testable with any command.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Deque, Dict, Optional, Tuple

from .contract import METRICS_EVENT
from .paths import engine_fix_command
from .progress_text import ProgressEvent

CANCEL_GRACE_S = 3.0
"""How long the engine gets after SIGTERM to clean up before it is killed."""
POLL_S = 0.1
"""How often the runner checks for a cancel request: well inside the 1-2 s an analyst waits."""
STREAM_DRAIN_S = 2.0
"""How long to wait for output pipes after the engine exits (a grandchild may still hold them)."""
STDERR_TAIL_LINES = 12
LOW_PRIORITY_NICE = 10
"""Niceness added to a low-priority engine on POSIX. Under Linux's scheduler a nice-10 thread weighs 110
against 1,024 for a normal one, so QGIS and a detection started meanwhile get ~90 % of a contended core
and the low-priority engine the rest, and all of an idle one."""


class Status(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunResult:
    """How a run ended: succeeded with the engine's ``data``, failed with a reason, or cancelled."""

    status: Status
    data: Dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @classmethod
    def succeeded(cls, data: Dict[str, Any]) -> "RunResult":
        return cls(Status.SUCCEEDED, data)

    @classmethod
    def failed(cls, message: str) -> "RunResult":
        return cls(Status.FAILED, message=message)

    @classmethod
    def cancelled(cls) -> "RunResult":
        return cls(Status.CANCELLED, message="Cancelled; nothing was written.")

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED


@dataclass(frozen=True)
class EngineCommand:
    """An engine CLI command and its arguments, e.g. ``EngineCommand("info", ("scene.tif",))``.

    ``low_priority`` runs the engine below normal CPU priority: for background work (sample generation)
    that must not slow QGIS or a detection the analyst starts meanwhile.
    """

    name: str
    args: Tuple[str, ...] = ()
    low_priority: bool = False


@dataclass
class _Transcript:
    """What the engine said during one run, folded into a RunResult once it has exited."""

    data: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    engine_cancelled: bool = False
    stderr_tail: Deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))

    def result(self, returncode: int, cancel_requested: bool, python: str) -> RunResult:
        if cancel_requested or self.engine_cancelled or returncode == 130:
            return RunResult.cancelled()
        if self.error is not None:
            return RunResult.failed(self._with_hints(self.error, python))
        if returncode == 0 and self.data is not None:
            return RunResult.succeeded(self.data)
        if returncode < 0:
            number = -returncode
            try:
                name = f", {signal.Signals(number).name}"
            except ValueError:
                name = ""
            return RunResult.failed(self._with_hints(
                f"The engine process stopped unexpectedly (signal {number}{name}). It was killed or "
                "crashed, usually from running out of memory; nothing was added. Try the CPU device, a "
                "smaller tile size or a smaller extent." + self._tail(), python))
        if returncode != 0:
            return RunResult.failed(self._with_hints(
                f"The engine failed (exit code {returncode})." + self._tail(), python))
        return RunResult.failed("The engine finished without a result; it may be older than the plugin."
                                + self._tail())

    def _tail(self) -> str:
        return ("\nEngine output:\n" + "\n".join(self.stderr_tail)) if self.stderr_tail else ""

    def _with_hints(self, message: str, python: str) -> str:
        """Add the fix for failures that have a known one: a missing package, a full GPU."""
        text = (message + "\n" + "\n".join(self.stderr_tail)).lower()
        if "modulenotfounderror" in text or "no module named" in text:
            message += (f"\nThe engine Python ({python}) lacks a package. Fix: {engine_fix_command(python)}"
                        ", or choose another engine Python in Settings › Options › Slick Mapper.")
        elif "out of memory" in text:
            message += "\nThe device ran out of memory: choose a smaller tile size or the CPU device."
        return message


def _pump(stream: IO[str], source: str, lines: "queue.Queue[Tuple[str, Optional[str]]]") -> None:
    """Copy ``stream`` line by line into ``lines``, then close it and put a None to say so."""
    try:
        for line in stream:
            lines.put((source, line.rstrip("\r\n")))
    finally:
        stream.close()
        lines.put((source, None))


class EngineRunner:
    """Runs one engine command at a time in ``python`` with ``root`` (the folder holding ``engine/``)."""

    def __init__(self, python: str, root: Optional[Path]) -> None:
        self.python = python
        self.root = root

    def argv(self, command: EngineCommand) -> list:
        return [self.python, "-m", "engine", "--jsonl", command.name, *command.args]

    def run(
        self,
        command: EngineCommand,
        on_progress: Optional[Callable[[ProgressEvent], None]] = None,
        on_log: Optional[Callable[[str], None]] = None,
        is_cancelled: Callable[[], bool] = lambda: False,
        on_started: Optional[Callable[[int], None]] = None,
        on_metrics: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> RunResult:
        """Run ``command`` to the end and say how it ended; never raises for engine trouble.

        ``is_cancelled`` is polled every POLL_S; once true the engine gets SIGTERM, and SIGKILL (with
        its whole process group) if it is still alive CANCEL_GRACE_S later.
        """
        if self.root is None:
            return RunResult.failed("The engine/ folder was not found beside the plugin; reinstall Slick Mapper.")
        try:
            process = subprocess.Popen(
                self.argv(command), cwd=str(self.root), env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                start_new_session=os.name == "posix", **(_low_priority() if command.low_priority else {}))
        except OSError as error:
            return RunResult.failed(
                f"The engine Python '{self.python}' cannot be started ({error.strerror or error}). "
                f"Fix: {engine_fix_command(self.python)}, or choose another engine Python in "
                "Settings › Options › Slick Mapper.")
        if on_started is not None:
            on_started(process.pid)
        transcript = _Transcript()
        cancel_requested = self._follow(process, transcript, on_progress, on_log, is_cancelled, on_metrics)
        return transcript.result(process.wait(), cancel_requested, self.python)

    def _follow(
        self,
        process: subprocess.Popen,
        transcript: _Transcript,
        on_progress: Optional[Callable[[ProgressEvent], None]],
        on_log: Optional[Callable[[str], None]],
        is_cancelled: Callable[[], bool],
        on_metrics: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> bool:
        """Read the engine's output until it exits, handling cancel; True if a cancel was requested."""
        lines: "queue.Queue[Tuple[str, Optional[str]]]" = queue.Queue()
        for stream, source in ((process.stdout, "out"), (process.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, source, lines), daemon=True).start()
        open_streams = 2
        terminated_at: Optional[float] = None
        exited_at: Optional[float] = None
        while open_streams:
            now = time.monotonic()
            if terminated_at is None and is_cancelled():
                terminated_at = now
                _terminate(process)
            elif terminated_at is not None and now - terminated_at > CANCEL_GRACE_S and process.poll() is None:
                _kill(process)
            if exited_at is None and process.poll() is not None:
                exited_at = now
            elif exited_at is not None and now - exited_at > STREAM_DRAIN_S:
                _kill(process)  # children of the engine keep the pipes open
                break
            try:
                source, line = lines.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
            elif source == "out":
                self._handle(line, transcript, on_progress, on_log, on_metrics)
            else:
                transcript.stderr_tail.append(line)
                if on_log is not None:
                    on_log(line)
        return terminated_at is not None

    @staticmethod
    def _handle(
        line: str,
        transcript: _Transcript,
        on_progress: Optional[Callable[[ProgressEvent], None]],
        on_log: Optional[Callable[[str], None]],
        on_metrics: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> None:
        """Dispatch one stdout line; anything that is not a known event is log text."""
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        event = message.get("event") if isinstance(message, dict) else None
        if event == "progress":
            if on_progress is not None:
                on_progress(ProgressEvent(str(message.get("stage", "")), int(message.get("done", 0)),
                                          int(message.get("total", 0)), str(message.get("message", ""))))
        elif event == "result":
            transcript.data = dict(message.get("data") or {})
        elif event == "error":
            transcript.error = str(message.get("message") or message.get("kind") or "The engine reported an error.")
        elif event == "cancelled":
            transcript.engine_cancelled = True
        elif event == METRICS_EVENT:
            if on_metrics is not None:
                on_metrics({key: value for key, value in message.items() if key != "event"})
        elif on_log is not None:
            on_log(str(message["message"]) if event == "log" and "message" in message else line)



def _low_priority() -> Dict[str, Any]:
    """Popen options that start the engine below normal priority, before it has started any thread.

    On Linux niceness belongs to each thread and a new thread inherits its creator's, so the engine is
    niced in the child between fork and exec (``preexec_fn``): torch's threads, started later, inherit it.
    Niced from outside after the start, the engine's first threads could escape it. Python warns that
    ``preexec_fn`` can deadlock when the parent has threads holding locks; ``_nice`` makes system calls
    only and takes no lock. Windows has no niceness: the engine gets the BELOW_NORMAL priority class.
    """
    if os.name == "posix":
        return {"preexec_fn": _nice}
    return {"creationflags": subprocess.BELOW_NORMAL_PRIORITY_CLASS}


def _nice() -> None:
    """Lower the engine's priority, and its autogroup's where Linux has autogroups.

    The engine runs in a session of its own (``start_new_session``), and with autogroups (the default of
    many Linux desktops) the scheduler first shares the CPU fairly between sessions and applies niceness
    only inside each one: without the autogroup's nice, a niced engine would still take half the CPU from
    QGIS or a detection. Lowering it is allowed to anyone, at most once per 0.1 s across the system, so a
    refusal is met by one retry after that time.
    """
    os.nice(LOW_PRIORITY_NICE)
    try:
        group = os.open("/proc/self/autogroup", os.O_WRONLY)
    except OSError:  # not Linux, or a kernel without autogroups
        return
    try:
        for attempt in range(2):
            try:
                os.write(group, str(LOW_PRIORITY_NICE).encode())
                break
            except BlockingIOError:  # EAGAIN: another process set an autogroup's nice in the last 0.1 s
                time.sleep(0.11)
            except OSError:
                break
    finally:
        os.close(group)


def _terminate(process: subprocess.Popen) -> None:
    """Ask the engine to stop: it removes partial files and exits 130."""
    try:
        process.terminate()
    except ProcessLookupError:
        pass


def _kill(process: subprocess.Popen) -> None:
    """Kill the engine and every process it started (its session's group on POSIX)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
