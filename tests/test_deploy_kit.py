"""The deployment kit (deploy/) run the way production runs it, outside any container (no engine runs here).

`test_the_kit_deploys_behind_nginx` (marker `deploy_kit`; `.ci/run` runs it once, on the PostgreSQL pass):
1. the Containerfile's two install steps, run as written (paths moved into a temporary folder, no system user):
   deploy/install.sh builds the wheel, then installs it with its `postgres` extra into a fresh virtualenv;
2. the kit's SQL creates a fresh role and database on the PostgreSQL at BRIDGE_TEST_DATABASE_URL;
3. a redis-server runs the kit's Redis settings;
4. migrate, web, worker and beat run exactly as the systemd units say (ExecStart=, Environment=,
   WorkingDirectory= read from the unit files), with the kit's settings template as the .env;
5. Debian's nginx runs the kit's site (a self-signed certificate for bridge.test) in front, in the foreground.
Then: a signed GitHub delivery through nginx reaches the fake Zoho; /admin, /metrics and /readyz are not
reachable through the public site (nor by encoded paths); nginx's own refusals are JSON; the front page shows the
public URL; and wrong admin tokens from five addresses behind nginx (127.0.0.2-6: Linux routes all of 127/8 on lo)
lock out only those addresses while a sixth logs in, with a Secure cookie.

The other tests here read the kit's files only: the units, the compose file and the image run the same commands.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode, urlparse

import pytest
import yaml

from bridge.web import admin_guard
from testkit.factories import github_request, issues_event
from testkit.fakes.zoho import FakeZoho
from testkit.harness import REPO, free_port, wait_for
from tests.test_admin import csrf_of
from tests.test_json_lines import not_json

KIT = REPO / "deploy"
UNITS = KIT / "systemd"
SERVICES = ("web", "worker", "beat")
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECRET = "deploy-kit-github-secret"
ADMIN_TOKEN = "deploy-kit-admin-token-0123456789"
NAME = "bridge.test"


# -- reading the kit ----------------------------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, list[str]]:
    """The [Service] keys of a unit file (each key's values in order), continuation lines joined."""
    values: dict[str, list[str]] = {}
    section = ""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def unit_command(name: str) -> list[str]:
    return shlex.split(read_unit(UNITS / f"issue-bridge-{name}.service")["ExecStart"][0])


def unit_environment(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in read_unit(UNITS / f"issue-bridge-{name}.service").get("Environment", []):
        for assignment in shlex.split(entry):
            key, value = assignment.split("=", 1)
            env[key] = value
    return env


def _normal(argv: list[str]) -> list[str]:
    """A command with its program by name and any bind address as ADDR (units bind loopback, containers all)."""
    out = [Path(argv[0]).name, *argv[1:]]
    return [re.sub(r"^[\d.]+:\d+$", "ADDR", a) for a in out]


def test_the_units_the_compose_file_the_image_and_the_procfile_run_the_same_commands():
    compose = yaml.safe_load((KIT / "compose.yaml").read_text())["services"]
    for name in SERVICES:
        assert _normal(compose[name]["command"]) == _normal(unit_command(name)), name
    assert _normal(compose["migrate"]["command"]) == _normal(unit_command("migrate"))
    assert compose["beat"]["deploy"]["replicas"] == 1
    cmd = re.search(r"^CMD (\[.*\])$", (KIT / "Containerfile").read_text(), re.M)
    assert cmd and _normal(json.loads(cmd.group(1))) == _normal(unit_command("web"))
    procfile = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if ": " in line)
    for name in SERVICES:
        procfile_argv = [re.sub(r"^0\.0\.0\.0:\$\{PORT:-8000\}$", "ADDR", a) for a in shlex.split(procfile[name])]
        assert _normal(procfile_argv) == _normal(unit_command(name)), name


def test_beat_is_a_single_instance_unit():
    beat = UNITS / "issue-bridge-beat.service"
    assert "@" not in beat.name  # a template could be started many times
    service = read_unit(beat)
    assert service.get("KillMode", ["control-group"]) == ["control-group"]  # nothing left over at a restart
    assert "Restart" in service and service["Restart"] != ["always"]


def test_the_nginx_body_limit_is_max_webhook_bytes():
    from bridge.settings import load_settings

    limits = re.findall(r"client_max_body_size (\d+)m;", (KIT / "nginx" / "issue-bridge.conf").read_text())
    default = load_settings({}, read_dotenv=False).max_webhook_bytes
    assert limits and all(int(m) * 1024 * 1024 == default for m in limits)


# -- the deployment ---------------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SYSTEMD_PATH)
    if not found:
        pytest.fail(f"{name} is not installed (.ci/run installs nginx, openssl, redis-server and postgresql)")
    return found


def _replace_all(text: str, replacements: dict[str, str], where: str) -> str:
    for old, new in replacements.items():
        assert old in text, f"{where} no longer contains {old!r}: update this test's rendering"
        text = text.replace(old, new)
    return text


class Https(http.client.HTTPSConnection):
    """HTTPS to nginx on 127.0.0.1:port, from a chosen loopback source address, with SNI and Host `name`."""

    def __init__(self, port: int, source: str, name: str, context: ssl.SSLContext) -> None:
        super().__init__(name, port, timeout=30, context=context)
        self._source, self._ctx = source, context

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout, (self._source, 0))
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


class Client:
    def __init__(self, port: int, cert: Path, source: str = "127.0.0.1", name: str = NAME) -> None:
        self.port, self.source, self.name = port, source, name
        self.context = ssl.create_default_context(cafile=str(cert))
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str, list[str]]:
        conn = Https(self.port, self.source, self.name, self.context)
        try:
            headers = dict(headers or {})
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            set_cookies = response.headers.get_all("Set-Cookie") or []
            for cookie in set_cookies:
                key, _, value = cookie.split(";", 1)[0].partition("=")
                self.cookies[key] = value
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text, set_cookies
        finally:
            conn.close()

    def login(self, token: str, headers: dict[str, str] | None = None) -> tuple[int, list[str]]:
        status, _, page, _ = self.request("GET", "/admin/login", headers=headers)
        assert status == 200, page[:500]
        form = urlencode({"token": token, "csrf_token": csrf_of(page), "next": "/admin/"}).encode()
        status, _, _, cookies = self.request(
            "POST", "/admin/login", form, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        )
        return status, cookies


def _mapping(fake: FakeZoho) -> str:
    project = next(iter(fake.projects))
    return f"""source: github
zoho:
  portal: "{fake.portal_id}"
  external_id_field: external_id
  project:
    default: "{project}"
external_id: "github:{{repository}}#{{number}}"
fields:
  title: "{{title}}"
  description: "{{body}}"
  status:
    from: state
    map: {{open: Open, closed: Closed}}
"""


def _settings_file(template: str, values: dict[str, str]) -> str:
    """The kit's settings template with these values set (each key must be in the template or is appended)."""
    lines, seen = [], set()
    for line in template.splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if key in values:
            lines.append(f"{key}={values[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in values.items() if k not in seen]
    return "\n".join(lines) + "\n"


class Deployment:
    def __init__(self, tmp: Path, server_url: str) -> None:
        self.tmp = tmp
        self.server_url = server_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.opt, self.home = tmp / "opt", tmp / "home"
        self.suffix = uuid.uuid4().hex[:8]
        self.role = self.dbname = f"ib_kit_{self.suffix}"
        self.db_password = uuid.uuid4().hex
        self.redis_password = uuid.uuid4().hex
        self.timings: dict[str, float] = {}

    def _timed(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 1)

    # 1. the image's install steps
    def install(self) -> None:
        started = time.monotonic()
        containerfile = re.sub(r"\\\n\s*", " ", (KIT / "Containerfile").read_text())  # continuation lines
        steps = re.findall(r"^RUN (.*install\.sh.*)$", containerfile, re.M)
        assert len(steps) == 2, steps
        replacements = {
            "/src/deploy/install.sh": str(KIT / "install.sh"),
            "/kit/install.sh": str(KIT / "install.sh"),
            "--source /src": f"--source {REPO}",
            "/dist": str(self.tmp / "dist"),
            "/opt/issue-bridge": str(self.opt),
            "/srv/issue-bridge": str(self.home),
            " --user issue-bridge": "",  # the test machine gets no system user
        }
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        for command in steps:
            for old, new in replacements.items():
                command = command.replace(old, new)
            result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert (self.opt / "venv" / "bin" / "gunicorn").exists() and (self.home / "var").is_dir()
        self._timed("install", started)

    # 2. PostgreSQL
    def create_database(self) -> None:
        url = urlparse(self.server_url.replace("postgresql+psycopg://", "postgresql://"))
        self.pg = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
        result = subprocess.run(
            [
                *(_tool("psql"), *self.pg, "-d", (url.path or "/postgres").lstrip("/") or "postgres", "-q"),
                *("-v", f"role={self.role}", "-v", f"dbname={self.dbname}", "-v", f"password={self.db_password}"),
                *("-f", str(KIT / "postgres" / "issue-bridge.sql")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        self.database_url = (
            f"postgresql://{self.role}:{self.db_password}@{url.hostname}:{url.port or 5432}/{self.dbname}"
        )

    def drop_database(self) -> None:
        drop_db, drop_role = (
            f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{self.role}"',
        )
        result = subprocess.run(  # one -c each: DROP DATABASE cannot run inside the transaction a -c list shares
            [_tool("psql"), *self.pg, "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", drop_db, "-c", drop_role],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr

    # 3. Redis
    def start_redis(self) -> None:
        self.redis_port = free_port()
        (self.tmp / "redis").mkdir()
        conf = _replace_all(
            (KIT / "redis" / "issue-bridge.conf").read_text(),
            {
                "port 6379": f"port {self.redis_port}",
                "requirepass CHANGE-ME-to-a-long-random-value": f"requirepass {self.redis_password}",
                "dir /var/lib/redis": f"dir {self.tmp / 'redis'}",
            },
            "deploy/redis/issue-bridge.conf",
        )
        (self.tmp / "redis.conf").write_text(conf)
        self._spawn("redis", [_tool("redis-server"), str(self.tmp / "redis.conf")], os.environ.copy(), self.tmp)
        wait_for(self._redis_answers, 20, what="redis-server with the kit's settings")

    def _redis_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(f"AUTH {self.redis_password}\r\nPING\r\n".encode())
                time.sleep(0.05)
                return b"+PONG" in s.recv(64)
        except OSError:
            return False

    # 4. the bridge, as the units say
    def configure(self, fake: FakeZoho) -> None:
        template = (KIT / "issue-bridge.env").read_text()
        assert "TRUSTED_PROXIES=127.0.0.1" in template  # nginx on the same host: kept as the kit ships it
        settings = {
            "DATABASE_URL": self.database_url,
            "BROKER_URL": f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0",
            "ZOHO_API_BASE": fake.base_url,
            "ZOHO_ACCOUNTS_URL": fake.base_url,
            "ZOHO_CLIENT_ID": fake.client_id,
            "ZOHO_CLIENT_SECRET": fake.client_secret,
            "ZOHO_REFRESH_TOKEN": fake.refresh_token,
            "ZOHO_PORTAL_ID": fake.portal_id,
            "ZOHO_RATE_LIMIT_PER_MINUTE": "0",
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "COALESCE_MS": "0",
        }
        (self.home / ".env").write_text(_settings_file(template, settings))
        (self.home / "mappings" / "github.yaml").write_text(_mapping(fake))

    def _unit(self, name: str) -> tuple[list[str], dict[str, str], Path]:
        paths = {"/opt/issue-bridge": str(self.opt), "/srv/issue-bridge": str(self.home)}
        argv = [self._render(a, paths) for a in unit_command(name)]
        argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{self.web_port}") for a in argv]
        env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}  # systemd's environment, not the test's
        env.update({k: self._render(v, paths) for k, v in unit_environment(name).items()})
        cwd = Path(self._render(read_unit(UNITS / f"issue-bridge-{name}.service")["WorkingDirectory"][0], paths))
        return argv, env, cwd

    @staticmethod
    def _render(text: str, paths: dict[str, str]) -> str:
        for old, new in paths.items():
            text = text.replace(old, new)
        return text

    def start_bridge(self) -> None:
        started = time.monotonic()
        self.web_port = free_port()
        argv, env, cwd = self._unit("migrate")
        migrate = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        for name in SERVICES:
            argv, env, cwd = self._unit(name)
            assert Path(argv[0]).is_relative_to(self.opt / "venv"), argv  # the installed release, not the checkout
            self._spawn(name, argv, env, cwd)
        wait_for(self._web_up, 90, what=f"web on 127.0.0.1:{self.web_port} (see {self.logs / 'web.log'})")
        self._timed("bridge start", started)

    def _web_up(self) -> bool:
        self.assert_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.web_port), timeout=1):
                return True
        except OSError:
            return False

    # 5. nginx
    def start_nginx(self) -> None:
        self.public_port, self.internal_port = free_port(), free_port()
        prefix = self.tmp / "nginx"
        (prefix / "logs").mkdir(parents=True)
        self.cert, key = prefix / "bridge.pem", prefix / "bridge.key"
        subprocess.run(
            [
                *(_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME},DNS:bridge.internal"),
                *("-keyout", str(key), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        shutil.copy(KIT / "nginx" / "issue-bridge-errors.conf", prefix / "issue-bridge-errors.conf")
        site = _replace_all(
            (KIT / "nginx" / "issue-bridge.conf").read_text(),
            {
                "listen 443 ssl default_server;": f"listen 127.0.0.1:{self.public_port} ssl default_server;",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.public_port} ssl;",
                "listen 10.0.0.10:8443 ssl;": f"listen 127.0.0.1:{self.internal_port} ssl;",
                "server 127.0.0.1:8000;": f"server 127.0.0.1:{self.web_port};",
                "/etc/ssl/certs/bridge.example.com.pem": str(self.cert),
                "/etc/ssl/private/bridge.example.com.key": str(key),
                "/etc/nginx/snippets/issue-bridge-errors.conf": str(prefix / "issue-bridge-errors.conf"),
                "server_name bridge.example.com;": f"server_name {NAME};",
            },
            "deploy/nginx/issue-bridge.conf",
        )
        (prefix / "issue-bridge.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temporary prefix
        (prefix / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n  access_log off;\n  include {prefix / 'issue-bridge.conf'};\n}}\n"
        )
        nginx = _tool("nginx")
        check = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True)
        assert check.returncode == 0, check.stderr.decode()
        self._spawn("nginx", [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], os.environ.copy(), prefix)
        wait_for(self._nginx_up, 20, what="nginx")

    def _nginx_up(self) -> bool:
        self.assert_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.public_port), timeout=1):
                return True
        except OSError:
            return False

    # processes
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _json_error(status: int, text: str) -> None:
    answer = json.loads(text)
    assert answer["status"] == "error", (status, text)


@pytest.mark.deploy_kit
@pytest.mark.timeout(600)
def test_the_kit_deploys_behind_nginx(tmp_path):
    server_url = os.environ.get("BRIDGE_TEST_DATABASE_URL", "")
    if not server_url:
        pytest.skip("needs PostgreSQL: set BRIDGE_TEST_DATABASE_URL (.ci/run does)")
    started = time.monotonic()
    deployment = Deployment(tmp_path, server_url)
    fake = FakeZoho().start()
    try:
        deployment.install()
        deployment.create_database()
        deployment.start_redis()
        deployment.configure(fake)
        deployment.start_bridge()
        deployment.start_nginx()
        public = lambda source="127.0.0.1": Client(deployment.public_port, deployment.cert, source)  # noqa: E731
        internal = lambda source="127.0.0.1": Client(deployment.internal_port, deployment.cert, source)  # noqa: E731

        # A signed GitHub delivery through nginx reaches Zoho.
        body, headers = github_request(SECRET, "issues", issues_event("opened", number=42, title="Through nginx"))
        status, _, text, _ = public("127.0.0.2").request("POST", "/webhooks/github", body, headers)
        assert status == 200 and json.loads(text)["status"] == "accepted", text
        wait_for(lambda: deployment.assert_alive() or fake.issues(), 60, what="the issue in the fake Zoho")
        assert [issue["name"] for issue in fake.issues()] == ["Through nginx"]

        # Only /webhooks/*, /healthz and / are public: /admin, /metrics and /readyz are not, however spelled.
        assert public().request("GET", "/healthz")[0] == 200
        status, _, front, _ = public().request("GET", "/")
        assert status == 200 and f"https://{NAME}:{deployment.public_port}/webhooks/github" in front
        for path in (
            "/admin",
            "/admin/login",
            "/metrics",
            "/readyz",
            "/readyz/strict",
            "/webhooks/../admin/login",
            "/webhooks/..%2Fadmin/login",
            "/webhooks/%2e%2e/metrics",
            "/%61dmin/login",
            "//metrics",
            "/healthz/../metrics",
        ):
            for method in ("GET", "POST"):
                status, headers_, text, _ = public().request(method, path)
                assert status == 404 and headers_["content-type"] == "application/json", (method, path, status, text)
                assert "bridge_" not in text and "csrf" not in text, (method, path)
        # ... but they are on the internal site.
        status, _, metrics, _ = internal().request("GET", "/metrics")
        assert status == 200 and "bridge_deliveries_total" in metrics
        assert internal().request("GET", "/readyz")[0] == 200

        # nginx's own refusals are JSON (a header or request line over gunicorn's limits never reaches it).
        for path, extra, expected in (
            ("/webhooks/github", {"X-Big": "b" * 9_000}, 431),
            ("/webhooks/" + "a" * 9_000, {}, 414),
        ):
            status, headers_, text, _ = public().request("POST", path, b"{}", extra)
            assert status == expected and headers_["content-type"] == "application/json", (status, text[:300])
            _json_error(status, text)
        # A body over MAX_WEBHOOK_BYTES: nginx answers from Content-Length alone (and closes), so none is sent.
        too_large = {"Content-Length": str(5 * 1024 * 1024 + 1), "Content-Type": "application/json"}
        status, headers_, text, _ = public().request("POST", "/webhooks/github", headers=too_large)
        assert status == 413 and headers_["content-type"] == "application/json", (status, text[:300])

        # Behind nginx (TRUSTED_PROXIES=127.0.0.1) the lockout counts each client: five addresses guessing are
        # locked out, a sixth logs in. One of them rotates a spoofed X-Forwarded-For at every try: no help.
        guessers = [f"127.0.0.{i}" for i in range(2, 7)]
        for n, source in enumerate(guessers):
            client = internal(source)
            for attempt in range(admin_guard.CLIENT_FREE_FAILURES + 1):
                spoof = {"X-Forwarded-For": f"198.51.100.{attempt}"} if n == 0 else None
                assert client.login("wrong-token", spoof)[0] == 401, (source, attempt)
            assert client.login(ADMIN_TOKEN)[0] == 429, source  # locked out: the right token waits too
        status, cookies = internal("127.0.0.7").login(ADMIN_TOKEN)
        assert status == 302, status
        admin_cookie = next(c for c in cookies if c.startswith("bridge_admin="))
        assert "; Secure" in admin_cookie and "HttpOnly" in admin_cookie  # nginx said https
        from sqlalchemy import create_engine
        from sqlalchemy import text as sql

        engine = create_engine(deployment.database_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            keys = set(conn.execute(sql("SELECT key FROM kv WHERE key LIKE 'admin:login:client:%'")).scalars())
        engine.dispose()
        assert keys == {admin_guard._key(source) for source in guessers}, "each guesser counted, nginx itself never"

        deployment.assert_alive()
        for name in SERVICES:  # every line the services wrote is a JSON record (journald gets JSON)
            assert not_json((deployment.logs / f"{name}.log").read_text(errors="replace")) == [], name
        # With gunicorn gone, nginx answers a retryable JSON 503 (a sender redelivers later).
        web = deployment.procs["web"]
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(30)
        body, headers = github_request(SECRET, "issues", issues_event("edited", number=42))
        status, headers_, text, _ = public().request("POST", "/webhooks/github", body, headers)
        assert status == 503 and headers_.get("retry-after") == "30", (status, headers_, text)
        _json_error(status, text)
        deployment.timings["total"] = round(time.monotonic() - started, 1)
        print(f"\ndeploy kit: {deployment.timings}")
    finally:
        deployment.stop()
        fake.stop()
        if hasattr(deployment, "pg"):
            deployment.drop_database()
