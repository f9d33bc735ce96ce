"""From a fresh clone to the first real issue, exactly as the README says, timed step by step.

A fresh copy of the committed tree (`git archive HEAD`) in a scratch folder, a fake Zoho (accounts server and
Projects API, `testkit/fakes/zoho.py`) standing in for the portal, with option names that are not Zoho's
defaults. Then the README's commands, in order, each timed:

1. `make run` once to install (`.venv` with the runtime dependencies; pip's cache is used when warm), stopped
   again as soon as it says it runs (dry-run, no mapping: nothing to do yet);
2. `GITHUB_WEBHOOK_SECRET` in `.env`;
3. `issue-bridge zoho connect` with the Self Client code (`--accounts-url`/`--api-base` point it at the fake,
   where an admin gives `--dc`), which also runs `zoho verify --project`;
4. `issue-bridge mappings init github --project <id>`;
5. `issue-bridge mappings check`;
6. `make run` until it says it runs, live;
7. `issue-bridge send-test github`: the answer, then the Zoho calls; the issue is in the fake portal.

What a person does between commands (creating the Self Client in Zoho's console, reading) is not timed; the
"commands" total is the time spent waiting for the bridge. Prints a table and, with `--json FILE`, the figures.
`BENCH_KEEP=1` keeps the scratch folder. Run from the repository root: `.venv/bin/python bench/first_issue.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.targets.zoho.grant import SCOPES  # noqa: E402
from testkit.fakes.zoho import FakeZoho  # noqa: E402

PROJECT = "1752587000000098001"
OPTIONS = {  # a portal whose names are its own, as most are
    "status": ["Triage", "Working on it", "Ready for QA", "Shipped", "Won't fix"],
    "severity": ["Sev 1 - Outage", "Sev 2 - Major", "Sev 3 - Minor", "Sev 4 - Cosmetic"],
    "classification": ["Defect", "Vulnerability", "Improvement", "New feature"],
}
READY_SECONDS = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Steps:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    def run(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], expect: str = "") -> str:
        started = time.monotonic()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - started
        output = done.stdout + done.stderr
        if done.returncode != 0 or expect not in output:
            raise SystemExit(f"step {name!r} failed ({done.returncode}):\n{output}")
        self.rows.append((name, seconds, " ".join(argv[:4])))
        return output

    def make_run(self, name: str, cwd: Path, env: dict[str, str], expect: str) -> subprocess.Popen[str]:
        """`make run` in the background, timed until it says it runs; the caller stops it."""
        started = time.monotonic()
        proc = subprocess.Popen(
            ["make", "run"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + READY_SECONDS
        for line in proc.stdout:
            lines.append(line)
            if "issue-bridge running on" in line:
                if expect not in line:
                    stop(proc)
                    raise SystemExit(f"{name}: {line}")
                self.rows.append((name, time.monotonic() - started, "make run"))
                return proc
            if time.monotonic() > deadline:
                break
        stop(proc)
        raise SystemExit(f"{name}: never said it runs:\n{''.join(lines[-40:])}")


def stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as the README says (the process group this script started)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="first_issue_"))
    clone = scratch / "issue-bridge"
    clone.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(clone)], input=archive, check=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "GITHUB_", "BRIDGE_", "VIRTUAL_ENV"))}
    env |= {"PORT": str(port), "PATH": os.environ["PATH"]}
    env.pop("DATABASE_URL", None)
    env.pop("BROKER_URL", None)
    cli = [str(clone / ".venv" / "bin" / "issue-bridge")]
    steps = Steps()
    fake = FakeZoho(options=OPTIONS).start()
    proc = None
    try:
        proc = steps.make_run("make run (install, first start)", clone, env, "DRY-RUN")
        stop(proc)
        (clone / ".env").write_text("GITHUB_WEBHOOK_SECRET=an-example-secret\n")
        code = fake.self_client_code(list(SCOPES["projects"]))  # the admin's Self Client > Generate Code
        connect = [*cli, "zoho", "connect", "--accounts-url", fake.base_url, "--api-base", fake.base_url]
        connect += ["--client-id", fake.client_id, "--client-secret", fake.client_secret, "--code", code]
        steps.run("zoho connect (+ verify)", [*connect, "--project", PROJECT], clone, env, "can work with this portal")
        init = [*cli, "mappings", "init", "github", "--project", PROJECT]
        steps.run("mappings init github", init, clone, env, "wrote")
        steps.run("mappings check", [*cli, "mappings", "check"], clone, env, ": ok")
        proc = steps.make_run("make run (live)", clone, env, "(live)")
        out = steps.run("send-test github", [*cli, "send-test", "github"], clone, env, "event ")
        stop(proc)
        issues = fake.issues(PROJECT)
        if [i["name"] for i in issues] != ["issue-bridge test delivery"]:
            raise SystemExit(f"the fake portal has {issues!r}\n{out}")
    finally:
        if proc is not None:
            stop(proc)
        fake.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(scratch, ignore_errors=True)
    total = sum(s for _, s, _ in steps.rows)
    print(f"\nfresh clone to the first real issue (fake portal, port {port}):")
    for name, seconds, _ in steps.rows:
        print(f"  {name:<34} {seconds:7.1f} s")
    print(f"  {'commands, total':<34} {total:7.1f} s  ({'MET' if total < 600 else 'MISSED'}: under 10 minutes)")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps.rows, "total_seconds": total}, indent=2))


if __name__ == "__main__":
    main()
