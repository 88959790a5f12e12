#!/usr/bin/env python3
"""The production stack on one host, as real processes: SeaweedFS (S3), an MLflow server (PostgreSQL backend, S3
artifacts, proxied), and Dagster (PostgreSQL instance, daemon with the run queue, webserver, code server).

    python infra/stack.py up [SERVICE ...]   start what is not running, health-check each before returning
    python infra/stack.py down [SERVICE ...] stop what `up` started (by the PIDs it recorded, nothing else)
    python infra/stack.py status             one line per service: pid, port, healthy or not
    python infra/stack.py run SERVICE        run one service in the foreground (a container's entrypoint)
    python infra/stack.py env                the client environment (`eval "$(python infra/stack.py env)"`)
    python infra/stack.py demo [--job J] [--config-json JSON]   submit a job to the run queue, wait for it

Every setting comes from the environment (defaults in `Settings`); `up` writes what it used to
`$VIDEODIT_STACK_DIR/settings.json` (default `.stack/` in the project), which later commands read, so `down`,
`status` and `demo` talk to the stack that `up` started. PIDs are under `pids/`, logs under `logs/`.
Set `VIDEODIT_S3_ENDPOINT` to use an existing S3 (AWS, MinIO, R2): SeaweedFS is then not started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's entry points (dagster, mlflow, weed) beside this interpreter
SERVICES = ("seaweedfs", "mlflow", "code-server", "daemon", "webserver")
START_TIMEOUT_S = float(os.environ.get("VIDEODIT_STACK_START_TIMEOUT_S", "180"))
LOCATION = "videodit"


# Every setting: (environment variable, default). `Settings.from_env()` reads them; the test sets them all.
VARIABLES = {
    "stack_dir": ("VIDEODIT_STACK_DIR", str(REPO / ".stack")),
    "project_dir": ("VIDEODIT_PROJECT_DIR", str(REPO)),
    "preset": ("VIDEODIT_PRESET", "demo"),
    "host": ("VIDEODIT_BIND_HOST", "127.0.0.1"),  # every listener binds here
    "advertise_host": ("VIDEODIT_ADVERTISE_HOST", ""),  # SeaweedFS's own address for its peers (a pod's IP); else host
    # How clients reach the MLflow server and the code server when that is not `host` (compose: service names).
    "mlflow_host": ("VIDEODIT_MLFLOW_HOST", ""),
    "code_server_host": ("VIDEODIT_CODE_SERVER_HOST", ""),
    # PostgreSQL (the machine's own): two databases, created when missing.
    "pg_host": ("PGHOST", "127.0.0.1"),
    "pg_port": ("PGPORT", "5432"),
    "pg_user": ("PGUSER", "postgres"),
    "pg_password": ("PGPASSWORD", ""),
    "dagster_db": ("VIDEODIT_DAGSTER_DB", "videodit_dagster"),
    "mlflow_db": ("VIDEODIT_MLFLOW_DB", "videodit_mlflow"),
    # S3: SeaweedFS here unless VIDEODIT_S3_ENDPOINT names another; credentials from the environment
    # (the defaults are for a throw-away single-host store only).
    "s3_endpoint": ("VIDEODIT_S3_ENDPOINT", ""),
    "s3_bucket": ("VIDEODIT_S3_BUCKET", "videodit"),
    "s3_region": ("AWS_DEFAULT_REGION", "us-east-1"),
    "access_key": ("AWS_ACCESS_KEY_ID", "videodit"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "videodit-local-secret"),
    "s3_port": ("VIDEODIT_S3_PORT", 8333),
    # SeaweedFS's internal listeners; each gRPC port is its http port + the offset, as in weed itself.
    "weed_master_port": ("VIDEODIT_WEED_MASTER_PORT", 9333),
    "weed_volume_port": ("VIDEODIT_WEED_VOLUME_PORT", 9340),
    "weed_filer_port": ("VIDEODIT_WEED_FILER_PORT", 8888),
    "weed_admin_port": ("VIDEODIT_WEED_ADMIN_PORT", 23646),
    "weed_grpc_offset": ("VIDEODIT_WEED_GRPC_OFFSET", 10000),
    "mlflow_port": ("VIDEODIT_MLFLOW_PORT", 5000),
    "mlflow_workers": ("VIDEODIT_MLFLOW_WORKERS", 2),
    # How long an MLflow client keeps retrying a server that is gone: MLflow's default (7 retries, backoff 2 s) spends
    # about two minutes per call, and a step makes several calls before it can fail, so a killed server hung the step
    # for minutes. 2 retries, backoff 1 s: ~3 s per call, enough for a blip; the training retry policy does the rest.
    "mlflow_http_retries": ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 2),
    "mlflow_http_backoff_s": ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1),
    # MLflow 3's server also starts a job runner for its GenAI jobs (trace rollups, prompt optimisation), which the
    # product does not use: 8 more processes, ~1.9 GB of RSS and ~20 s of CPU at each start (measured, one worker).
    "mlflow_job_execution": ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    "webserver_port": ("VIDEODIT_DAGSTER_PORT", 3000),
    "code_server_port": ("VIDEODIT_CODE_SERVER_PORT", 4266),
}


@dataclass
class Settings:
    """Where everything listens and lives (see VARIABLES). Loopback by default; every port from the environment."""

    stack_dir: str
    project_dir: str
    preset: str
    host: str
    advertise_host: str
    mlflow_host: str
    code_server_host: str
    pg_host: str
    pg_port: str
    pg_user: str
    pg_password: str
    dagster_db: str
    mlflow_db: str
    s3_endpoint: str
    s3_bucket: str
    s3_region: str
    access_key: str
    secret_key: str
    s3_port: int
    weed_master_port: int
    weed_volume_port: int
    weed_filer_port: int
    weed_admin_port: int
    weed_grpc_offset: int
    mlflow_port: int
    mlflow_workers: int
    mlflow_http_retries: int
    mlflow_http_backoff_s: int
    mlflow_job_execution: str
    webserver_port: int
    code_server_port: int

    @classmethod
    def from_env(cls, env=None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for name, (variable, default) in VARIABLES.items():
            raw = env.get(variable) or default
            values[name] = int(raw) if isinstance(default, int) else str(raw)
        return cls(**values)

    @property
    def root(self) -> Path:
        return Path(self.stack_dir).expanduser().resolve()

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def endpoint(self) -> str:
        return self.s3_endpoint or f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.mlflow_host or self.host}:{self.mlflow_port}"

    def pg_url(self, db: str) -> str:
        auth = self.pg_user + (f":{self.pg_password}" if self.pg_password else "")
        # psycopg2 named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which dagster-postgres does not speak
        return f"postgresql+psycopg2://{auth}@{self.pg_host}:{self.pg_port}/{db}"

    def client_env(self) -> dict[str, str]:
        """What a process needs to use the stack: the run workers (via the code server), the CLI, a notebook."""
        return {
            "DAGSTER_HOME": str(self.dagster_home),
            "VIDEODIT_DAGSTER_PG_URL": self.pg_url(self.dagster_db),  # read by infra/dagster/dagster.yaml
            "VIDEODIT_PROJECT_DIR": str(Path(self.project_dir).resolve()),
            "VIDEODIT_PRESET": self.preset,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_http_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.mlflow_http_backoff_s),
            "VIDEODIT_DVC_REMOTE": f"s3://{self.s3_bucket}/dvc",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.s3_region,
            "AWS_ENDPOINT_URL": self.endpoint,  # boto3, botocore and s3fs (DVC's S3 remote) read it
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "settings.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)  # holds the S3 secret

    @classmethod
    def load(cls) -> Settings:
        """The settings `up` saved, else the environment's."""
        fresh = cls.from_env()
        path = fresh.root / "settings.json"
        if not path.is_file():
            return fresh
        saved = json.loads(path.read_text())
        return cls(**{f.name: saved.get(f.name, getattr(fresh, f.name)) for f in fields(cls)})


# ---------------------------------------------------------------------------------------------------- processes


def _pid_file(s: Settings, service: str) -> Path:
    return s.root / "pids" / f"{service}.pid"


def _log_file(s: Settings, service: str) -> Path:
    return s.root / "logs" / f"{service}.log"


def _started_pid(s: Settings, service: str) -> int | None:
    """The pid `up` recorded for `service`, if that very process (same start time) is still alive."""
    path = _pid_file(s, service)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        import psutil

        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) > 1 or process.status() == psutil.STATUS_ZOMBIE:
            return None  # the pid was reused by someone else's process: not ours
    except Exception:
        return None
    return record["pid"]


def _command(s: Settings, service: str) -> list[str]:
    home = s.dagster_home
    if service == "seaweedfs":
        g = s.weed_grpc_offset
        return [
            str(BIN / "weed"), "mini", f"-dir={s.root / 'seaweedfs'}", f"-ip={s.advertise_host or s.host}", f"-ip.bind={s.host}",
            f"-s3.port={s.s3_port}", f"-s3.port.grpc={s.s3_port + g}",
            f"-master.port={s.weed_master_port}", f"-master.port.grpc={s.weed_master_port + g}",
            f"-volume.port={s.weed_volume_port}", f"-volume.port.grpc={s.weed_volume_port + g}",
            f"-filer.port={s.weed_filer_port}", f"-filer.port.grpc={s.weed_filer_port + g}",
            f"-admin.port={s.weed_admin_port}", f"-admin.port.grpc={s.weed_admin_port + g}",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-bucket={s.s3_bucket}", "-master.volumeSizeLimitMB=256",
        ]  # fmt: skip
    if service == "mlflow":
        return [
            str(BIN / "mlflow"), "server", "--backend-store-uri", s.pg_url(s.mlflow_db),
            "--artifacts-destination", f"s3://{s.s3_bucket}/mlartifacts", "--serve-artifacts",
            "--host", s.host, "--port", str(s.mlflow_port), "--workers", str(s.mlflow_workers),
        ]  # fmt: skip
    if service == "code-server":
        return [str(BIN / "dagster"), "code-server", "start", "-h", s.host, "-p", str(s.code_server_port),
                "-m", "dagster_project.definitions", "--location-name", LOCATION]  # fmt: skip
    if service == "daemon":
        return [str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")]
    if service == "webserver":
        return [str(BIN / "dagster-webserver"), "-h", s.host, "-p", str(s.webserver_port), "-w", str(home / "workspace.yaml")]
    raise SystemExit(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def _process_env(s: Settings, service: str) -> dict[str, str]:
    env = {**os.environ, **s.client_env()}
    if service == "seaweedfs":  # weed mini makes these its admin S3 identity
        env.update(AWS_ACCESS_KEY_ID=s.access_key, AWS_SECRET_ACCESS_KEY=s.secret_key)
    if service == "mlflow":
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = s.mlflow_job_execution
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _healthy(s: Settings, service: str) -> bool:
    try:
        if service == "seaweedfs":
            return _bucket_reachable(s)
        if service == "mlflow":
            with urllib.request.urlopen(f"{s.mlflow_uri}/health", timeout=2) as r:
                return r.status == 200
        if service == "webserver":
            with urllib.request.urlopen(f"http://{s.host}:{s.webserver_port}/server_info", timeout=2) as r:
                return r.status == 200 and _location_loaded(s)
        if service == "code-server":
            out = subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(s.code_server_port), "-h", s.host],
                                 env=_process_env(s, service), capture_output=True, timeout=30)  # fmt: skip
            return out.returncode == 0
        if service == "daemon":
            return _daemon_heartbeating(s)
    except LocationLoadError:
        raise
    except Exception:
        return False
    return False


class LocationLoadError(SystemExit):
    """The code server is up but the definitions did not load: no point waiting."""


def _location_loaded(s: Settings) -> bool:
    """True once the webserver sees the code location loaded; LocationLoadError with Dagster's message if it failed."""
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    request = urllib.request.Request(f"http://{s.host}:{s.webserver_port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        entries = json.load(r)["data"]["workspaceOrError"]["locationEntries"]
    for entry in entries:
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            raise LocationLoadError(f"code location {entry['name']} failed to load:\n{loaded['message']}")
    return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)


def _s3_client(s: Settings):
    import boto3

    return boto3.client("s3", endpoint_url=s.endpoint, aws_access_key_id=s.access_key,
                        aws_secret_access_key=s.secret_key, region_name=s.s3_region)  # fmt: skip


def _bucket_reachable(s: Settings) -> bool:
    _s3_client(s).head_bucket(Bucket=s.s3_bucket)
    return True


def check_bucket(s: Settings) -> None:
    """Fail with a sentence naming the endpoint and bucket (not a stack trace) when S3 refuses us."""
    import botocore.exceptions

    try:
        client = _s3_client(s)
        try:
            client.head_bucket(Bucket=s.s3_bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            client.create_bucket(Bucket=s.s3_bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SystemExit(f"S3 bucket s3://{s.s3_bucket} at {s.endpoint} is not usable with access key "
                         f"{s.access_key!r} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {exc}") from None  # fmt: skip


def _daemon_heartbeating(s: Settings) -> bool:
    out = subprocess.run([str(BIN / "dagster-daemon"), "liveness-check"], env=_process_env(s, "daemon"),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    return out.returncode == 0


def _ensure_databases(s: Settings) -> None:
    import psycopg2

    conn = psycopg2.connect(host=s.pg_host, port=s.pg_port, user=s.pg_user, password=s.pg_password or None, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (s.dagster_db, s.mlflow_db):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()


def _prepare_dagster_home(s: Settings, migrate: bool = True) -> None:
    home = s.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "infra" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    (home / "workspace.yaml").write_text(
        "load_from:\n  - grpc_server:\n"
        f"      host: {s.code_server_host or s.host}\n      port: {s.code_server_port}\n      location_name: {LOCATION}\n"
    )
    if not migrate:
        return
    # Create (or upgrade) the PostgreSQL schema once, before three processes could race to.
    subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=_process_env(s, "daemon"), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def _wait_healthy(s: Settings, service: str, pid: int) -> None:
    import psutil

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        if _healthy(s, service):
            return
        time.sleep(0.5)
    log = _log_file(s, service)
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    raise SystemExit(f"{service} did not become healthy within {START_TIMEOUT_S:.0f}s (log {log}):\n{tail}")


def start(s: Settings, service: str) -> int:
    """Start `service` detached (its own process group), record its pid, return once it is healthy."""
    import psutil

    pid = _started_pid(s, service)
    if pid is not None:
        _wait_healthy(s, service, pid)
        return pid
    for sub in ("pids", "logs"):
        (s.root / sub).mkdir(parents=True, exist_ok=True)
    log = _log_file(s, service).open("ab")
    process = subprocess.Popen(_command(s, service), env=_process_env(s, service), cwd=s.project_dir, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    record = {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(), "cmd": _command(s, service)}
    _pid_file(s, service).write_text(json.dumps(record))
    _wait_healthy(s, service, process.pid)
    return process.pid


def stop(s: Settings, services: list[str], timeout_s: float = float(os.environ.get("VIDEODIT_STACK_STOP_TIMEOUT_S", "10"))) -> dict[str, bool]:
    """SIGTERM the process groups `up` started for `services` (all at once), SIGKILL what is left after `timeout_s`;
    {service: whether it was running}. Only those groups: never a process found by name."""
    import psutil

    pids = {service: _started_pid(s, service) for service in services}
    for service in services:
        _pid_file(s, service).unlink(missing_ok=True)
    running = {service: pid for service, pid in pids.items() if pid is not None}
    for pid in running.values():
        try:
            os.killpg(pid, signal.SIGTERM)  # the group we created with start_new_session: the service and its workers
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for pid in running.values():
        try:
            psutil.Process(pid).wait(timeout=max(0.1, deadline - time.monotonic()))
        except (psutil.TimeoutExpired, psutil.NoSuchProcess):
            pass
    for pid in running.values():  # what did not stop, and children left in the group (gunicorn workers, run workers)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {service: service in running for service in services}


def services_for(s: Settings, names: list[str]) -> list[str]:
    names = list(names or SERVICES)
    unknown = set(names) - set(SERVICES)
    if unknown:
        raise SystemExit(f"unknown service(s) {', '.join(sorted(unknown))}: choose from {', '.join(SERVICES)}")
    if s.s3_endpoint and "seaweedfs" in names:
        names.remove("seaweedfs")  # an external S3 is not ours to start or stop
    return [n for n in SERVICES if n in names]


def up(s: Settings, names: list[str]) -> None:
    s.save()
    Path(s.project_dir).mkdir(parents=True, exist_ok=True)
    wanted = services_for(s, names)
    _ensure_databases(s)
    # The schema migration takes seconds: only when a Dagster service starts (not to restart S3 or MLflow alone).
    _prepare_dagster_home(s, migrate=bool(set(wanted) & {"code-server", "daemon", "webserver"}))
    for service in wanted:
        t0 = time.monotonic()
        pid = start(s, service)
        if service == "seaweedfs" or (service == "mlflow" and "seaweedfs" not in wanted):
            check_bucket(s)
        print(f"{service:<12} pid {pid:<8} healthy in {time.monotonic() - t0:5.1f}s  log {_log_file(s, service)}", flush=True)
    print(f"Dagster UI http://{s.host}:{s.webserver_port}   MLflow {s.mlflow_uri}   S3 {s.endpoint} bucket {s.s3_bucket}")


def down(s: Settings, names: list[str]) -> None:
    for service, was_running in stop(s, list(reversed(services_for(s, names)))).items():
        print(f"{service:<12} {'stopped' if was_running else 'was not running'}", flush=True)


def status(s: Settings) -> int:
    bad = 0
    for service in services_for(s, []):
        pid = _started_pid(s, service)
        ok = pid is not None and _healthy(s, service)
        bad += not ok
        print(f"{service:<12} {'pid ' + str(pid) if pid else 'not running':<14} {'healthy' if ok else 'NOT healthy'}")
    return 1 if bad else 0


def run_foreground(s: Settings, service: str) -> None:
    """A container's entrypoint: the same command `up` starts, in the foreground, replacing this process.
    The daemon's container creates the databases and migrates the instance; the others only write their config."""
    if service in ("daemon", "mlflow"):
        _ensure_databases(s)
    if service in ("daemon", "webserver", "code-server"):
        _prepare_dagster_home(s, migrate=service == "daemon")
    cmd = _command(s, service)
    os.execvpe(cmd[0], cmd, _process_env(s, service))


# ---------------------------------------------------------------------------------------------------- runs


def submit(s: Settings, job: str, run_config: dict, tags: dict | None = None) -> str:
    """Submit `job` through the webserver's GraphQL API: the run goes to the queue and the daemon launches it."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient(s.host, port_number=s.webserver_port)
    return client.submit_job_execution(job, repository_location_name=LOCATION, run_config=run_config, tags=tags or {})


def graphql(s: Settings, query: str, variables: dict | None = None) -> dict:
    """One query or mutation against the webserver's GraphQL API; its `data`."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://{s.host}:{s.webserver_port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        answer = json.load(r)
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL error: {answer['errors']}")
    return answer["data"]


def terminate(s: Settings, run_id: str) -> None:
    from dagster_graphql import DagsterGraphQLClient

    DagsterGraphQLClient(s.host, port_number=s.webserver_port).terminate_run(run_id)


def sensor_selector(name: str) -> dict:
    return {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": name}


def wait_for_run(s: Settings, run_id: str, timeout_s: float = 3600) -> str:
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient(s.host, port_number=s.webserver_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.get_run_status(run_id).value
        if state in ("SUCCESS", "FAILURE", "CANCELED"):
            return state
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down"):
        sub.add_parser(name).add_argument("services", nargs="*", default=[], help=", ".join(SERVICES))
    sub.add_parser("status")
    sub.add_parser("env")
    sub.add_parser("run").add_argument("service", choices=SERVICES)
    demo = sub.add_parser("demo")
    demo.add_argument("--job", default="full_pipeline")
    demo.add_argument("--config-json", default="{}")
    args = parser.parse_args(argv)
    s = Settings.from_env() if args.cmd == "run" else Settings.load()
    if args.cmd == "up" and not any(_started_pid(s, n) for n in SERVICES):
        s = Settings.from_env()  # nothing of an earlier stack runs here: the environment's settings, saved by up()
    if args.cmd == "up":
        up(s, args.services)
    elif args.cmd == "down":
        down(s, args.services)
    elif args.cmd == "status":
        return status(s)
    elif args.cmd == "env":
        for key, value in s.client_env().items():
            print(f"export {key}={value!r}" if "'" not in value else f'export {key}="{value}"')
    elif args.cmd == "run":
        run_foreground(s, args.service)
    elif args.cmd == "demo":
        run_id = submit(s, args.job, json.loads(args.config_json))
        print(f"run {run_id} of {args.job} queued; UI http://{s.host}:{s.webserver_port}/runs/{run_id}", flush=True)
        state = wait_for_run(s, run_id)
        print(f"run {run_id}: {state}")
        return 0 if state == "SUCCESS" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
