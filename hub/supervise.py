"""`hub run`'s supervisor: named child processes, each restarted with backoff when it dies.

A child that dies (SIGKILL, the OOM killer, a crash) is started again after a delay that
doubles while it keeps dying young, and the log says so; the others keep serving. Each
child runs in its own process group, so a terminal's Ctrl-C reaches `hub run` alone and
the supervisor stops the children in order: everything else first, then the services
they use (Redis), so a worker finishing its job can still record it. Each child is also
told by Linux to stop when `hub run` dies (PR_SET_PDEATHSIG), so even a SIGKILLed
supervisor leaves nothing listening on the port or taking jobs.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How long `hub run` waits for the web server to stop: granian gives its workers 10 s
# (workers_kill_timeout, set from this in `hub serve`).
WEB_STOP_TIMEOUT = 15


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Have Linux send `sig` to this process when its parent exits; at once if it already has.

    Called in a child: as Popen's preexec_fn, or first thing in a multiprocessing child
    (granian's web worker, RQ cron), which Python would otherwise leave running as orphans.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0 and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)  # the parent died before the request took effect


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Backoff:
    """Restart delays: `first`, doubled while the process keeps dying within `steady_after`
    seconds of its start, at most `most`."""

    first: float = 1.0
    most: float = 30.0
    steady_after: float = 30.0
    quick_deaths: int = 0

    def after_death(self, lived: float) -> float:
        if lived >= self.steady_after:
            self.quick_deaths = 0
        delay = min(self.most, self.first * 2 ** self.quick_deaths)
        self.quick_deaths += 1
        return delay


@dataclass
class Child:
    """One supervised process: a name for the log, its command, and how long it may take to stop."""

    name: str
    argv: list[str]
    stop_timeout: float = 10.0
    service: bool = False  # others use it: stopped after them
    backoff: Backoff = field(default_factory=Backoff)
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float = 0.0
    restart_at: float | None = None
    restart_delay: float = 0.0
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Start children, restart the ones that die, stop them all in order."""

    def __init__(self, children: list[Child], env: dict | None = None):
        self.children = children
        self.env = env

    def start(self) -> None:
        for child in sorted(self.children, key=lambda c: not c.service):
            self._spawn(child)

    def watch(self, stopping, interval: float = 0.2) -> None:
        """Restart dead children until `stopping()` is true."""
        while not stopping():
            self.poll()
            time.sleep(interval)

    def poll(self) -> None:
        """One look at every child: note the dead, restart those whose delay is over."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                    log.warning("restarted %s (exit %s) in %.1f s", child.name, child.last_exit,
                                child.restart_delay)
                continue
            code = child.process.poll()
            if code is None:
                continue
            _signal_group(child, signal.SIGTERM)  # what it started goes with it
            child.restart_delay = child.backoff.after_death(now - child.started_at)
            child.last_exit = code
            child.restart_at = now + child.restart_delay
            log.warning("%s exited (exit %s); restarting it in %.1f s", child.name, code, child.restart_delay)

    def stop(self) -> None:
        """SIGTERM to every child, services last; SIGKILL only to one past its stop_timeout."""
        for wave in ([c for c in self.children if not c.service], [c for c in self.children if c.service]):
            for child in wave:
                child.restart_at = None
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in wave:
                self._wait_stopped(child)

    def _wait_stopped(self, child: Child) -> None:
        if child.process is None:
            return
        began = time.monotonic()
        try:
            child.process.wait(timeout=child.stop_timeout)
            log.info("stopped %s (exit %s) in %.1f s", child.name, child.process.returncode,
                     time.monotonic() - began)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killing it", child.name, child.stop_timeout)
            _signal_group(child, signal.SIGKILL)
            child.process.wait()
        _signal_group(child, signal.SIGKILL)  # anything of its group still there

    def _spawn(self, child: Child) -> None:
        _signal_group(child, signal.SIGKILL)  # leftovers of a previous run (e.g. a web worker on the port)
        # preexec_fn is unsafe beside threads: `hub run` starts none (the supervisor is its main loop).
        child.process = subprocess.Popen(
            child.argv, env=self.env, process_group=0,
            preexec_fn=functools.partial(die_with_parent, os.getpid()))  # noqa: PLW1509
        child.started_at = time.monotonic()
        child.restart_at = None


class Companion:
    """A multiprocessing child kept beside this process (RQ cron beside the worker): restarted
    with backoff when it dies, stopped with this process, and never outliving it."""

    def __init__(self, name: str, target, backoff: Backoff | None = None):
        self.name = name
        self.target = target  # called in the child with this process's pid
        self.backoff = backoff or Backoff()
        self.process = None
        self._stopping = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name=f"keep-{name}", daemon=True)

    def start(self) -> None:
        self._keeper.start()

    def _keep(self) -> None:
        # Started from this thread, which lives as long as the companion should: Linux ties
        # PR_SET_PDEATHSIG to the thread that forked the child.
        context = multiprocessing.get_context("spawn")
        exit_code = delay = None
        while not self._stopping.is_set():
            self.process = context.Process(target=self.target, args=(os.getpid(),), daemon=True)
            self.process.start()
            if exit_code is not None:
                log.warning("restarted %s (exit %s) in %.1f s", self.name, exit_code, delay)
            started = time.monotonic()
            self.process.join()
            if self._stopping.is_set():
                return
            exit_code = self.process.exitcode
            delay = self.backoff.after_death(time.monotonic() - started)
            log.warning("%s exited (exit %s); restarting it in %.1f s", self.name, exit_code, delay)
            self._stopping.wait(delay)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.is_alive():
            process.terminate()
            process.join(timeout)
            if process.is_alive():
                process.kill()


def _signal_group(child: Child, sig: int) -> None:
    if child.process is None:
        return
    try:
        os.killpg(child.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
