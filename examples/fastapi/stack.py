#!/usr/bin/env python3
"""The example's whole stack, on free loopback ports, from this repository:
a PostgreSQL of its own (initdb in a temp dir, wal_level=logical; as the
postgres user when run as root), redis-server, nats-server -js, the worker
(`invalidator run`), `invalidator cdc`, and the app (uvicorn).

    python3 stack.py            # run it until Ctrl-C; prints the URLs
    python3 -m pytest tests     # the tests start the same stack themselves

Every wait is bounded; every child gets SIGKILL if this process dies
(PR_SET_PDEATHSIG) and is stopped at exit.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import json
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Optional

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
RULES = HERE / "rules.yaml"
SCHEMA = HERE / "schema.sql"

_children: list["Proc"] = []


class Missing(Exception):
    """A binary or module the stack needs is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig() -> None:
    # SIGKILL the child when the thread that started it dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _base_env() -> dict[str, str]:
    """A minimal environment, so that the caller's NATS_*, REDIS_* ... do not
    leak into the children."""
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOPROXY", "GOTOOLCHAIN")
    return {k: os.environ[k] for k in keep if k in os.environ}


class Proc:
    """A child process whose output is kept (the last 1 MiB) and can be
    waited on; DEBUG_CHILDREN=1 copies it to stderr."""

    def __init__(self, name: str, args: list[str], env: Optional[dict] = None, cwd=None, user: Optional[str] = None, log_dir=None):
        self.name, self.args = name, args
        self.output = ""
        self._cond = threading.Condition()
        self._log = open(os.path.join(log_dir, f"{name}.log"), "a", encoding="utf-8") if log_dir else None
        self.p = subprocess.Popen(
            args, env=env, cwd=cwd, user=user, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=_pdeathsig, text=True, encoding="utf-8", errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()
        _children.append(self)

    def _read(self) -> None:
        for line in self.p.stdout:
            if os.environ.get("DEBUG_CHILDREN"):
                sys.stderr.write(f"[{self.name}] {line}")
            if self._log:
                self._log.write(line)
                self._log.flush()
            with self._cond:
                self.output = (self.output + line)[-(1 << 20):]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def tail(self, n: int = 3000) -> str:
        return self.output[-n:]

    def lines(self) -> list[str]:
        with self._cond:
            return self.output.splitlines()

    def wait_output(self, pattern: str, timeout: float, since: int = 0) -> re.Match:
        """The first match of pattern in the output after offset since;
        raises when the process exits first or after timeout seconds."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self.output, since)
                if m:
                    return m
                if self.p.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.name} exited ({self.p.returncode}) before /{pattern}/:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no /{pattern}/ within {timeout} s:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def mark(self) -> int:
        """An offset for wait_output(since=...): only output after now."""
        with self._cond:
            return len(self.output)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._reader.join(5)
        if self._log:
            self._log.close()
            self._log = None
        if self in _children:
            _children.remove(self)


@atexit.register
def _stop_all() -> None:
    for c in list(reversed(_children)):
        c.stop(5)


def _ready(p: Proc, wait) -> Proc:
    """p once wait() returns; p stopped if it raises."""
    try:
        wait()
    except BaseException:
        p.stop(5)
        raise
    return p


def need(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise Missing(f"{binary} not found on PATH ({hint})")
    return path


def postgres_bin_dir() -> str:
    """The directory of initdb and postgres, as internal/servers finds it."""
    p = shutil.which("initdb")
    if p:
        d = os.path.dirname(os.path.realpath(p))
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    matches = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)])
    if matches:
        return os.path.dirname(matches[-1])
    raise Missing("PostgreSQL binaries (initdb, postgres) not found (apt-get install -y postgresql)")


class Postgres:
    """A PostgreSQL of the example's own: initdb into a temp dir (as the
    postgres user when root: initdb refuses root), wal_level=logical,
    trusting loopback, on a free port; database `app` with schema.sql."""

    def __init__(self, work: str, log_dir=None):
        self.bin = postgres_bin_dir()
        self.dir = tempfile.mkdtemp(prefix="fastapi-pg-", dir=work)
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as err:
                raise Missing("initdb cannot run as root and there is no postgres user") from err
            self.user = "postgres"
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.dir, "data")
        out = subprocess.run(
            [os.path.join(self.bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"],
            user=self.user, capture_output=True, text=True, timeout=120, preexec_fn=_pdeathsig,
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        self.proc = Proc("postgres", [
            os.path.join(self.bin, "postgres"), "-D", data, "-p", str(self.port), "-k", self.dir,
            "-c", "listen_addresses=127.0.0.1", "-c", "wal_level=logical", "-c", "max_replication_slots=8",
            "-c", "max_wal_senders=8", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
        ], user=self.user, log_dir=log_dir)
        try:
            self.proc.wait_output(r"database system is ready to accept connections", 30)
            self.psql("postgres", "CREATE DATABASE app")
            self.psql("app", file=str(SCHEMA))
        except BaseException:
            self.stop()
            raise

    def url(self, db: str = "app") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db: str, sql: Optional[str] = None, file: Optional[str] = None, timeout: float = 30) -> str:
        """Run SQL through the psql client, as an operator would; returns its
        output (unaligned, tuples only)."""
        args = [need("psql", "apt-get install -y postgresql-client"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url(db)]
        args += ["-c", sql] if sql is not None else ["-f", file]
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_base_env())
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout.strip()

    def stop(self) -> None:
        self.proc.stop(20, signal.SIGINT)  # fast shutdown: no waiting for clients
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self, work: str, port: int = 0, log_dir=None):
        self.bin = need("redis-server", "apt-get install -y redis-server")
        self.dir = work
        self.port = port or free_port()
        self.start(log_dir)

    def start(self, log_dir=None) -> None:
        self.proc = Proc("redis", [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", self.dir], log_dir=log_dir)
        _ready(self.proc, lambda: self.proc.wait_output(r"Ready to accept connections", 10))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()


class Nats:
    def __init__(self, work: str, log_dir=None):
        self.port = free_port()
        self.proc = Proc("nats", [need("nats-server", "apt-get install -y nats-server"), "-js", "-a", "127.0.0.1",
                                  "-p", str(self.port), "-sd", os.path.join(work, "jetstream")], log_dir=log_dir)
        _ready(self.proc, lambda: self.proc.wait_output(r"Server is ready", 10))

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()


def build_invalidator(work: str, timeout: float = 300) -> str:
    """$INVALIDATOR_BIN, or `go build ./cmd/invalidator` from this repository."""
    if os.environ.get("INVALIDATOR_BIN"):
        return os.environ["INVALIDATOR_BIN"]
    go = need("go", "install Go to build the worker, or set INVALIDATOR_BIN")
    out = os.path.join(work, "invalidator")
    r = subprocess.run([go, "build", "-o", out, "./cmd/invalidator"], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, env=_base_env())
    if r.returncode != 0:
        raise RuntimeError(f"go build failed:\n{r.stderr[-3000:]}")
    return out


def wait_http(url: str, timeout: float, want: int = 200, proc: Optional[Proc] = None) -> dict:
    """The JSON of url once it answers want, within timeout seconds; raises
    at once if proc exits meanwhile."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.p.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.p.returncode}) before {url} answered:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == want:
                    return json.loads(r.read() or b"{}")
                last = r.status
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.05)
    tail = f":\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"{url}: no {want} within {timeout} s (last: {last}){tail}")


class Stack:
    """Every server of the example, started in order, stopped in reverse."""

    def __init__(self, app_port: int = 0, app_env: Optional[dict] = None, log_dir: Optional[str] = None):
        self.work = tempfile.mkdtemp(prefix="fastapi-stack-")
        if os.geteuid() == 0:
            os.chmod(self.work, 0o755)
        self.log_dir = log_dir or self.work
        os.makedirs(self.log_dir, exist_ok=True)
        self.started: list = []
        try:
            self.bin = build_invalidator(self.work)
            self.pg = self._add(Postgres(self.work, self.log_dir))
            self.redis = self._add(Redis(self.work, log_dir=self.log_dir))
            self.nats = self._add(Nats(self.work, self.log_dir))
            self.worker = self._add(self.start_worker())
            self.cdc = self._add(self.start_cdc())
            self.app_port = app_port or free_port()
            self.app = self._add(self.start_app(app_env or {}))
        except BaseException:
            self.stop()
            raise

    def _add(self, x):
        self.started.append(x)
        return x

    def start_worker(self) -> Proc:
        self.worker_http = free_port()
        env = {**_base_env(), "REDIS_URL": self.redis.url, "NATS_URL": self.nats.url, "INVALIDATOR_RULES": str(RULES),
               "GENERATIONS": "on", "HTTP_ADDR": f"127.0.0.1:{self.worker_http}", "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
        p = Proc("worker", [self.bin, "run"], env=env, cwd=REPO, log_dir=self.log_dir)
        return _ready(p, lambda: p.wait_output(r"worker started", 30))

    def start_cdc(self) -> Proc:
        self.cdc_http = free_port()
        env = {**_base_env(), "CDC_DATABASE_URL": self.pg.url(), "NATS_URL": self.nats.url, "INVALIDATOR_RULES": str(RULES),
               "HTTP_ADDR": f"127.0.0.1:{self.cdc_http}", "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
        p = Proc("cdc", [self.bin, "cdc"], env=env, cwd=REPO, log_dir=self.log_dir)
        return _ready(p, lambda: wait_http(f"http://127.0.0.1:{self.cdc_http}/health/ready", 30, proc=p))

    def start_app(self, extra: dict) -> Proc:
        env = {**_base_env(), "DATABASE_URL": self.pg.url(), "REDIS_URL": self.redis.url, "LOG_LEVEL": "INFO", **extra}
        p = Proc("app", [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(self.app_port),
                         "--no-access-log"], env=env, cwd=HERE, log_dir=self.log_dir)
        return _ready(p, lambda: wait_http(f"{self.app_url}/health", 30, proc=p))

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    def worker_events(self, subject: str) -> list[dict]:
        """The worker's JSON lines for events of subject it applied."""
        out = []
        for line in self.worker.lines():
            if subject in line and line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("subject") == subject and rec.get("msg") == "event applied":
                    out.append(rec)
        return out

    def stop(self) -> None:
        for x in reversed(self.started):
            try:
                x.stop()
            except Exception as err:  # keep stopping the others
                sys.stderr.write(f"stop {x}: {err}\n")
        self.started.clear()
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    print("🔧 building the worker and starting PostgreSQL, Redis, NATS, the worker, cdc and the app ...", flush=True)
    stack = Stack(app_port=port, log_dir=os.environ.get("STACK_LOG_DIR"))
    print(f"""✅ the stack is up (logs in {stack.log_dir}):
  app         {stack.app_url}   (try {stack.app_url}/api/v3/analytics/courses/42 twice, then {stack.app_url}/docs)
  PostgreSQL  {stack.pg.url()}
  Redis       {stack.redis.url}
  NATS        {stack.nats.url}
  worker      http://127.0.0.1:{stack.worker_http}/api/v3/system/health/detailed
  cdc         http://127.0.0.1:{stack.cdc_http}/api/v3/system/health/detailed
  psql {stack.pg.url()} -c "UPDATE courses SET title = 'Go 2' WHERE id = 42"
Ctrl-C stops it all.""", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            for x in stack.started:
                proc = getattr(x, "proc", x)
                if proc.p.poll() is not None:
                    print(f"❌ {proc.name} exited ({proc.p.returncode}):\n{proc.tail()}", file=sys.stderr)
                    stop.set()
    except KeyboardInterrupt:
        pass
    print("🔌 stopping", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
