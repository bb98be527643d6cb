"""The container engine, one module per Docker noun (python-on-whales's shape): ``daemon``,
``imagetools``, ``buildx``, ``image``, ``container``; ``cli`` is the door they share.

Everything above calls these small typed functions and gets ``EngineError`` with one actionable
line when the engine says no. Nothing here decides policy.
"""

from __future__ import annotations

from pipeline.engine.buildx import (
    BuildOutput,
    build,
    build_error,
    cache_mount_ids,
    prune_cache_mounts,
)
from pipeline.engine.cli import UNREACHABLE_HINT, docker, is_unreachable
from pipeline.engine.compose import leftovers, run_compose
from pipeline.engine.container import (
    Container,
    container_state,
    create_network,
    exec_in,
    host_port,
    logs,
    remove_labelled,
    run_container,
    run_once,
    stop,
    wait_healthy,
)
from pipeline.engine.daemon import (
    MIN_BUILDX,
    BuilderInfo,
    DaemonInfo,
    builder_info,
    buildx_version,
    daemon_info,
    parse_version,
)
from pipeline.engine.image import (
    image_exists,
    image_history,
    image_labels,
    image_user,
    local_digest,
    local_images,
    local_sizes,
    remove_images,
    save_stream,
    saved_blobs,
)
from pipeline.engine.imagetools import index_digest, raw_manifest, registry_sizes, remote_digest

__all__ = [
    "MIN_BUILDX",
    "UNREACHABLE_HINT",
    "BuildOutput",
    "BuilderInfo",
    "Container",
    "DaemonInfo",
    "build",
    "build_error",
    "builder_info",
    "buildx_version",
    "cache_mount_ids",
    "container_state",
    "create_network",
    "daemon_info",
    "docker",
    "exec_in",
    "host_port",
    "image_exists",
    "image_history",
    "image_labels",
    "image_user",
    "index_digest",
    "is_unreachable",
    "leftovers",
    "local_digest",
    "local_images",
    "local_sizes",
    "logs",
    "parse_version",
    "prune_cache_mounts",
    "raw_manifest",
    "registry_sizes",
    "remote_digest",
    "remove_images",
    "remove_labelled",
    "run_compose",
    "run_container",
    "run_once",
    "save_stream",
    "saved_blobs",
    "stop",
    "wait_healthy",
]
