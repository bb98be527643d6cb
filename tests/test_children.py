"""children: commands die with the task. Killing only the invoke process mid-push must not
leave an orphaned ``docker push`` to finish on its own and write the release tag."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from faultproxy import FaultProxy, build_image, push_half_way, remove_images

from pipeline.build.record import BuildRecord
from pipeline.children import StalledError, run_child
from pipeline.registry.client import RegistryClient

ROOT = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead
        return fh.read().split()[2] != "Z"


def test_a_child_is_killed_by_the_kernel_when_its_parent_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    script = (
        "import sys\nfrom pipeline.children import run_child\n"
        f"run_child([sys.executable, {str(tmp_path / 'child.py')!r}], input=None, env=None, "
        "cwd=None, timeout=None)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_silent_command_is_stopped_as_stalled_after_its_idle_limit() -> None:
    started = time.monotonic()
    with pytest.raises(StalledError):
        run_child(
            [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(30)"],
            input=None,
            env=None,
            cwd=None,
            timeout=None,
            idle=1.0,
        )
    assert time.monotonic() - started < 5


@pytest.mark.engine
@pytest.mark.timeout(300)
def test_killing_invoke_mid_push_never_lets_the_push_write_the_release_tag(
    tmp_path: Path,
) -> None:
    name = f"test/{uuid.uuid4().hex[:12]}"
    with FaultProxy(mode="stall_after_bytes", count=300_000) as proxy:
        image = f"{proxy.address}/{name}"
        record = BuildRecord(
            image=image,
            version="1.2.3",
            tags=["v1.2.3", "1.2.3", "1.2", "1"],
            platforms=["linux/amd64", "linux/arm64"],
            immutable=["v1.2.3", "1.2.3"],
            ref="refs/tags/v1.2.3",
        )
        build_image(f"{image}:v1.2.3", tmp_path, size=2_000_000, extra_tags=record.full_tags[1:])
        path = tmp_path / "image.toml"
        record.write(path)
        process = push_half_way(proxy, path, ROOT, past=300_000, timeout=90)
        try:
            os.kill(process.pid, signal.SIGKILL)  # invoke only, not its process group
            process.wait()
            proxy.configure("pass")  # an orphaned push would now go through
            time.sleep(15)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            remove_images(*record.full_tags)
        direct = RegistryClient("127.0.0.1:5000")
        assert direct.tags(name) == []
