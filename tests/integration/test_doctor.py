"""`make doctor` / `python -m hadrlab doctor`: what is there, what is missing, how to get it."""

from __future__ import annotations

import os
import subprocess
import sys


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hadrlab", "doctor", *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60,
    )


def test_doctor_finds_redis_and_quiet_mode_says_nothing_when_all_is_well():
    full = _doctor()
    assert full.returncode == 0, full.stdout + full.stderr
    assert "ok      redis-server" in full.stdout
    quiet = _doctor("--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_doctor_names_a_missing_redis_and_how_to_install_it():
    result = _doctor("--quiet", HADRLAB_REDIS_SERVER="/nonexistent/redis-server")
    assert result.returncode == 1
    assert "MISSING redis-server" in result.stdout
    assert "/nonexistent/redis-server" in result.stdout
