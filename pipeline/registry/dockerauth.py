"""Docker credentials that never outlive the task: ``docker login`` writes into a temporary
``DOCKER_CONFIG`` directory (0700) that is removed when the block ends (or, at the latest, when
the process exits), never into ``~/.docker/config.json``.

The temporary config keeps the user's settings that are not credentials (contexts, plugins,
proxies) so the same daemon and CLI are used; ``auths``, ``credsStore`` and ``credHelpers`` are
left out, so a login can only land in the temporary file. Children that need the login
(``cosign``, ``imagetools``) get ``DOCKER_CONFIG`` in their environment: ``docker_env``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

_ACTIVE: ContextVar[str] = ContextVar("docker_config", default="")
_SECRET_KEYS = ("auths", "credsStore", "credHelpers")


def user_config_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or Path(environ.get("HOME", "~")) / ".docker")


@contextlib.contextmanager
def temporary_docker_config(environ: Mapping[str, str]) -> Iterator[Path]:
    """A fresh 0700 ``DOCKER_CONFIG`` for this block; removed after it."""
    directory = Path(tempfile.mkdtemp(prefix="pipeline-docker-"))
    os.chmod(directory, 0o700)
    cleanup = _remover(directory)
    atexit.register(cleanup)
    try:
        source = user_config_dir(environ)
        config: dict[str, object] = {}
        try:
            loaded = json.loads((source / "config.json").read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        for key in _SECRET_KEYS:
            config.pop(key, None)
        path = directory / "config.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        os.chmod(path, 0o600)
        for shared in ("contexts", "cli-plugins", "buildx"):
            if (source / shared).is_dir():
                (directory / shared).symlink_to(source / shared)
        token = _ACTIVE.set(str(directory))
        try:
            yield directory
        finally:
            _ACTIVE.reset(token)
    finally:
        cleanup()
        atexit.unregister(cleanup)


def docker_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """``env`` (None: this process's environment) with the active temporary
    ``DOCKER_CONFIG``; ``env`` unchanged when no temporary config is active."""
    active = _ACTIVE.get()
    if not active:
        return dict(env) if env is not None else None
    return {**(env if env is not None else os.environ), "DOCKER_CONFIG": active}


def _remover(directory: Path) -> Callable[[], None]:
    def remove() -> None:
        shutil.rmtree(directory, ignore_errors=True)

    return remove
