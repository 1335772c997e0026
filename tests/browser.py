"""A real headless Chromium for tests that check what a person sees in a page.

.ci/run installs Debian's chromium and sets LOSSTRACE_REQUIRE_CHROMIUM=1, so in CI a
missing browser fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every host lookup fails and any proxied request goes nowhere: a page that needs the
# network shows it here. (127.0.0.1 still answers, for a local `mlflow server`.)
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9"]


def chromium() -> str:
    """The browser's path; skips the test without one, fails when CI requires it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("LOSSTRACE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (install Debian's chromium)")
        pytest.skip("chromium not installed")
    return path


def dump_dom(url: str, profile: Path, *extra: str, timeout: int = 180) -> str:
    """The page's DOM after its scripts ran (`extra`: more flags, e.g. OFFLINE or a time budget)."""
    r = subprocess.run(
        [chromium(), *FLAGS, *extra, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def screenshot(url: str, shot: Path, profile: Path, *extra: str, size: str = "1200,1600", timeout: int = 180) -> Path:
    """A PNG of the page as drawn at `size` (width,height)."""
    subprocess.run(
        [
            chromium(),
            *FLAGS,
            *extra,
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    return shot
