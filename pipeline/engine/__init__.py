"""The container engine, one module per Docker noun (python-on-whales's shape): ``daemon``,
``imagetools``, ``buildx``, ``image``, ``container``; ``cli`` is the door they share.

Everything above calls these small typed functions and gets ``EngineError`` with one actionable
line when the engine says no. Nothing here decides policy.
"""

from __future__ import annotations

from pipeline.engine.buildx import (
    BuildOutput as BuildOutput,
)
from pipeline.engine.buildx import (
    build as build,
)
from pipeline.engine.buildx import (
    build_error as build_error,
)
from pipeline.engine.buildx import (
    cache_mount_ids as cache_mount_ids,
)
from pipeline.engine.buildx import (
    prune_cache_mounts as prune_cache_mounts,
)
from pipeline.engine.cli import (
    UNREACHABLE_HINT as UNREACHABLE_HINT,
)
from pipeline.engine.cli import (
    docker as docker,
)
from pipeline.engine.cli import (
    is_unreachable as is_unreachable,
)
from pipeline.engine.compose import leftovers as leftovers
from pipeline.engine.compose import run_compose as run_compose
from pipeline.engine.container import (
    Container as Container,
)
from pipeline.engine.container import (
    container_state as container_state,
)
from pipeline.engine.container import (
    create_network as create_network,
)
from pipeline.engine.container import (
    exec_in as exec_in,
)
from pipeline.engine.container import (
    host_port as host_port,
)
from pipeline.engine.container import (
    logs as logs,
)
from pipeline.engine.container import (
    remove_labelled as remove_labelled,
)
from pipeline.engine.container import (
    run_container as run_container,
)
from pipeline.engine.container import (
    run_once as run_once,
)
from pipeline.engine.container import (
    stop as stop,
)
from pipeline.engine.container import (
    wait_healthy as wait_healthy,
)
from pipeline.engine.daemon import (
    MIN_BUILDX as MIN_BUILDX,
)
from pipeline.engine.daemon import (
    BuilderInfo as BuilderInfo,
)
from pipeline.engine.daemon import (
    DaemonInfo as DaemonInfo,
)
from pipeline.engine.daemon import (
    builder_info as builder_info,
)
from pipeline.engine.daemon import (
    buildx_version as buildx_version,
)
from pipeline.engine.daemon import (
    daemon_info as daemon_info,
)
from pipeline.engine.daemon import (
    parse_version as parse_version,
)
from pipeline.engine.image import (
    image_exists as image_exists,
)
from pipeline.engine.image import (
    image_history as image_history,
)
from pipeline.engine.image import (
    image_labels as image_labels,
)
from pipeline.engine.image import (
    image_user as image_user,
)
from pipeline.engine.image import (
    local_digest as local_digest,
)
from pipeline.engine.image import (
    local_images as local_images,
)
from pipeline.engine.image import (
    local_sizes as local_sizes,
)
from pipeline.engine.image import (
    remove_images as remove_images,
)
from pipeline.engine.image import (
    save_stream as save_stream,
)
from pipeline.engine.image import (
    saved_blobs as saved_blobs,
)
from pipeline.engine.imagetools import (
    index_digest as index_digest,
)
from pipeline.engine.imagetools import (
    raw_manifest as raw_manifest,
)
from pipeline.engine.imagetools import (
    registry_sizes as registry_sizes,
)
from pipeline.engine.imagetools import (
    remote_digest as remote_digest,
)
