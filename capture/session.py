"""Recording a block of code or a whole workload: `record()` and `run_workload()`.

    from kfdtrace.capture import record
    with record("copy.kfdtrace") as rec:
        ...  # any code that opens kfdtrace.driver.System; everything it asks of the GPU is recorded
"""

from __future__ import annotations

import atexit
import datetime
import os
import platform
import runpy
import signal
import sys
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kfdtrace import __version__
from kfdtrace.capture.recorder import DEFAULT_CHUNK, Recorder, RecordingSyscalls
from kfdtrace.capture.trace_file import CaptureFailed
from kfdtrace.driver import kfd_ioctl as K
from kfdtrace.driver.backend import ENV_EMULATE, ENV_EMULATE_FROM, wrapping
from kfdtrace.driver.families import target_by_version
from kfdtrace.driver.syscalls import KFD_DEVICE, Syscalls
from kfdtrace.driver.topology import read_topology
from kfdtrace.driver.visible import visible_gpus
from kfdtrace.traces import records as R

RESEND = signal.SIGRTMAX  # capture run's own signal: a workload's handler deferred out of a record runs through it
RESEND_WAIT_S = 0.05  # the trace's lock is held this long at most for the main thread to begin what was deferred


def kfd_version(syscalls: Syscalls) -> list[int] | None:
    """The KFD interface version the backend speaks (None when /dev/kfd does not answer)."""
    try:
        fd = syscalls.open(KFD_DEVICE)
    except OSError:
        return None
    try:
        v = K.kfd_ioctl_get_version_args()
        syscalls.ioctl(fd, K.BY_NAME["GET_VERSION"].request, v)
        return [v.major_version, v.minor_version]
    except OSError:
        return None
    finally:
        syscalls.close(fd)


def system_header(syscalls: Syscalls) -> dict:
    """What a trace says about the machine it was recorded on: host, KFD version, topology (every node), and
    the GPUs the recorded program could use, in its device order (ROCR_/HIP_VISIBLE_DEVICES applied)."""
    topology = read_topology(syscalls)
    gpus = []
    for node in visible_gpus(topology.gpus, os.environ):
        t = target_by_version(node.gfx_target_version)
        gpus.append({"node": node.index, "gpu_id": node.gpu_id, "target": t.name, "family": t.family.name,
                     "sdma": t.family.sdma_dialect, "pm4": t.family.pm4_dialect})
    uname = platform.uname()
    return {"backend": syscalls.name, "kfd_version": kfd_version(syscalls), "topology": topology.to_dict(),
            "gpus": gpus, "host": {"kernel": uname.release, "machine": uname.machine, "system": uname.system,
                                   "python": platform.python_version()}}


class Session:
    """One recording: the recorder is made when the workload opens its first backend, so the trace's header
    holds the topology it really ran on."""

    def __init__(self, path: str, *, name: str | None, argv: list[str], chunk_size: int, tracking: str):
        self.path = path
        self.base = {"kfdtrace_version": __version__, "name": name, "command": argv,
                     "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        self.options = {"chunk_size": chunk_size, "tracking": tracking}
        self.recorder: Recorder | None = None
        self.summary: dict | None = None
        self._lock = threading.Lock()

    def wrap(self, inner: Syscalls) -> RecordingSyscalls:
        with self._lock:
            header = system_header(inner)
            if self.recorder is None:
                self.recorder = Recorder(self.path, {**self.base, **header}, **self.options)
            else:
                self.recorder.record(R.BACKEND, **header)
            dialects = {g["gpu_id"]: {"sdma": g["sdma"], "pm4": g["pm4"]} for g in header["gpus"]}
            return self.recorder.wrap(inner, dialects)

    def close(self, status: int | None = None) -> dict:
        with self._lock:
            if self.recorder is None:  # the workload never opened a GPU: still leave a valid (empty) trace
                self.recorder = Recorder(self.path, dict(self.base), **self.options)
            return self.recorder.close(status)


@contextmanager
def record(path: str, *, name: str | None = None, chunk_size: int = DEFAULT_CHUNK, tracking: str = "auto",
           argv: list[str] | None = None) -> Iterator[Session]:
    """Record everything the code in the block asks of the GPU into `path` (of the GPUs opened inside it: a
    System opened before the block is not seen, and a block that opens none warns that it recorded nothing)."""
    session = Session(path, name=name, argv=argv if argv is not None else list(sys.argv),
                      chunk_size=chunk_size, tracking=tracking)
    status = 0
    try:
        with wrapping(session.wrap):
            yield session
    except BaseException:
        status = 1
        raise
    finally:
        opened = session.recorder is not None
        session.summary = session.close(status)
        if not opened and not status:
            warnings.warn(f"record({path!r}): no GPU was opened inside the block, so the trace holds nothing (a "
                          "System opened before it is not recorded: open it inside `with record(...)`)",
                          RuntimeWarning, stacklevel=3)


@contextmanager
def _environment(updates: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in updates}
    for k, v in updates.items():
        if v is not None:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_workload(target: str, args: list[str], *, module: bool) -> int:
    """Run a script (or `-m` module) in this process as `__main__`, then what the interpreter runs when its main
    thread ends (the wait for its other non-daemon threads, the atexit handlers: campaign 88 found their GPU work
    missing from the trace); its exit status, never an exception."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [target, *args]
    # what `python script.py` (`python -m`) puts first: the script's folder (the current one), for its imports
    sys.path.insert(0, os.getcwd() if module else os.path.dirname(os.path.abspath(target)))
    try:
        status = _status(lambda: runpy.run_module(target, run_name="__main__", alter_sys=True) if module
                         else runpy.run_path(os.path.abspath(target), run_name="__main__"))  # (python's __file__
        # is absolute too: a script that changes folder finds its files by it; campaign 117)
        ended = _status(_interpreter_exit)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return status or ended


def _interpreter_exit() -> None:
    """What Python does after a script's main thread: the threading module's exit hooks (concurrent.futures
    stops its workers there), a join of every non-daemon thread, then the atexit handlers."""
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own step; it has no public name
    atexit._run_exitfuncs()


def _status(call: Callable[[], object]) -> int:
    """The exit status `call` gives the workload: 0, SystemExit's, 130 on Ctrl-C, 1 with the traceback for any
    other error of the workload's own. CaptureFailed (the recording's failure) goes on."""
    try:
        call()
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()  # as python prints it (campaign 117: capture said nothing)
        return 130
    except CaptureFailed:
        raise
    except BaseException:
        traceback.print_exc()  # the workload's own error: its traceback is what its author needs
        return 1


class _Signals:
    """The workload's signal handlers (Ctrl-C's too), each run as its signal comes but never while the main thread
    writes to the trace (holds its lock): an exception raised there would leave the writer's bookkeeping half done
    and the trace unreadable (campaign 88: a SIGALRM handler's did, and capture said it wrote the trace). A signal
    that comes then is queued, and a helper thread, woken through a pipe (all a signal handler may safely do),
    waits for the lock and has the main thread run the queue through RESEND, a signal of capture's own (campaign
    90: sending the signal itself again called a default handler the workload had put back meanwhile, and a
    wakeup fd saw it many times; campaign 92: a thread started per signal, in the handler, nested without end
    under a burst). Once the recording closes, the workload's signals are ignored (it is over, and cutting the
    close short would lose the index)."""

    def __init__(self, session: Session):
        self.session, self.main = session, threading.get_ident()
        self.install, self.installed = signal.signal, signal.getsignal
        self.theirs: dict[int, Callable] = {}  # signal -> the workload's handler behind `handle`
        self.deferred: deque[tuple[Callable, int, object]] = deque()  # (its handler, the signal, its frame)
        self.started = threading.Event()  # the main thread began to run what was deferred
        self._woken, self._wake = os.pipe()
        os.set_blocking(self._wake, False)
        self._helper = threading.Thread(target=self._resend, name="capture-signals", daemon=True)
        self._helper.start()

    def handle(self, signum: int, frame: object) -> object:
        """The handler of every signal the workload handles."""
        recorder = self.session.recorder
        if recorder is not None and recorder.closing:
            return None
        handler = self.theirs[signum]
        if recorder is not None and recorder.trace.lock._is_owned():  # RLock's own test, as Condition uses it
            self.deferred.append((handler, signum, frame))
            self._later()
            return None
        return handler(signum, frame)

    def _later(self) -> None:
        try:
            os.write(self._wake, b"\0")
        except OSError:  # the pipe is full: the helper is woken already (or gone, with the recording)
            pass

    def _resend(self) -> None:
        """The helper: at each wake, once the main thread is out of every record, has it run what was deferred,
        holding the trace's lock till it begins (then it cannot be back in a record)."""
        while os.read(self._woken, 4096):
            recorder = self.session.recorder
            if recorder is None:
                continue
            with recorder.trace.lock:
                if recorder.closing or not self.deferred:
                    continue
                self.started.clear()
                signal.pthread_kill(self.main, RESEND)
                self.started.wait(RESEND_WAIT_S)

    def run_deferred(self, signum: int, frame: object) -> None:
        """RESEND's handler: the handlers deferred, in the order their signals came."""
        self.started.set()
        recorder = self.session.recorder
        if recorder is not None and recorder.closing:
            self.deferred.clear()
            return
        if recorder is not None and recorder.trace.lock._is_owned():  # (the helper's wait ran out)
            self._later()
            return
        while self.deferred:
            handler, deferred, at = self.deferred.popleft()
            try:
                handler(deferred, at)
            except BaseException:
                if self.deferred:
                    self._later()
                raise

    def close(self) -> None:
        """Stop the helper."""
        os.close(self._wake)  # its read gives b"": it ends
        self._helper.join(RESEND_WAIT_S * 20)
        if not self._helper.is_alive():
            os.close(self._woken)

    def set(self, signum: int, handler: object) -> object:
        """signal.signal as the workload calls it: its handler behind `handle`; the one it had before back."""
        if signum == RESEND:
            raise ValueError(f"signal {signum} is capture run's own")
        before, was = self.get(signum), self.theirs.get(signum)
        if not callable(handler):
            self.install(signum, handler)  # (raising as Python's does: another thread, a signal none may handle)
            self.theirs.pop(signum, None)
            return before
        self.theirs[signum] = handler  # first: the signal may come as soon as `handle` is installed
        try:
            self.install(signum, self.handle)
        except BaseException:
            if was is None:
                del self.theirs[signum]
            else:
                self.theirs[signum] = was
            raise
        return before

    def get(self, signum: int) -> object:
        """signal.getsignal as the workload calls it: its own handler."""
        return self.theirs.get(signum) or self.installed(signum)


@contextmanager
def signals_between_records(session: Session) -> Iterator[None]:
    """The workload's signals are run between records (_Signals) while it runs in this (the main) thread;
    `signal.signal` and `signal.getsignal` take and give its own handlers meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = _Signals(session)
    previous = signal.getsignal(signal.SIGINT)
    if callable(previous):  # (not when Ctrl-C is ignored, as for a job started in the background)
        signals.set(signal.SIGINT, previous)
    resend = signal.signal(RESEND, signals.run_deferred)
    signal.signal, signal.getsignal = signals.set, signals.get
    try:
        yield
    finally:
        signal.signal, signal.getsignal = signals.install, signals.installed
        signal.signal(signal.SIGINT, previous)
        signals.close()
        signal.signal(RESEND, resend)


def capture_workload(session: Session, target: str, args: list[str], *, module: bool, emulate: str | None,
                     emulate_from: str | None) -> int:
    """`capture run`: run the workload with every backend it opens recorded into `session`; its status."""
    with _environment({ENV_EMULATE: emulate, ENV_EMULATE_FROM: emulate_from}), wrapping(session.wrap):
        return run_workload(target, args, module=module)
