"""The kubectl stand-in (``kubectl_standin.py``) as a fixture: put first on PATH, scripted,
its calls read back."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).with_name("kubectl_standin.py")
CONTEXT = "acme-staging"
ROLLED_OUT = 'deployment "gateway" successfully rolled out\n'
DEADLINE = 'error: deployment "gateway" exceeded its progress deadline\n'


@dataclass
class StandIn:
    """kubectl, as the code under test finds it on PATH: what it answers, what it was asked."""

    bin: Path
    script: Path
    log: Path
    real: str
    answers: dict[str, Any] = field(default_factory=dict)

    def answer(self, key: str, *answers: dict[str, Any]) -> None:
        """Script ``key``'s answers: one for every call, or several used in turn."""
        self.answers[key] = answers[0] if len(answers) == 1 else list(answers)
        self._write()

    def _write(self) -> None:
        config = {"log": str(self.log), "real": self.real, "answers": self.answers}
        self.script.write_text(json.dumps(config), encoding="utf-8")

    @property
    def environ(self) -> dict[str, str]:
        """The environment kubectl runs with: the stand-in first on PATH."""
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, "KUBECTL_STANDIN": str(self.script)}

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def calls(self) -> list[list[str]]:
        return [record["argv"] for record in self.records()]


@pytest.fixture
def kubectl(tmp_path: Path) -> StandIn:
    """A kubectl whose current context is acme-staging, whose namespace has both Secrets, whose
    diff finds differences, and whose rollouts succeed (rescript with ``answer``)."""
    real = shutil.which("kubectl")
    assert real, "the tests render with the real kubectl (kustomize): install kubectl"
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    executable = bin_dir / "kubectl"
    executable.write_text(f"#!{sys.executable}\n{STANDIN.read_text()}", encoding="utf-8")
    executable.chmod(0o755)
    standin = StandIn(bin_dir, tmp_path / "standin.json", tmp_path / "calls.jsonl", real)
    standin.answers = {
        "config current-context": {"stdout": f"{CONTEXT}\n"},
        "get secret": {"stdout": "secret/api-gateway-keys\nsecret/ghcr-pull\n"},
        "diff": {"rc": 1, "stdout": "-  image: old\n+  image: new\n"},
        "apply": {"stdout": "deployment.apps/gateway serverside-applied\n"},
        "rollout status": {"stdout": ROLLED_OUT},
    }
    standin._write()
    return standin
