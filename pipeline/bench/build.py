"""``bench.build``: how fast the image builds and starts, and how big it is (figures, not tests).

Builds run from a temporary copy of the tree (so the gateway change never touches the real
one) into a bench-only image name. Cached rebuilds are timed three times (median); the first
rebuild after a change also pays for BuildKit preparing the cold build's snapshots. "Cold" is
``--no-cache`` plus a fresh layer-cache directory and a fresh uv download cache mount
(``UV_CACHE_ID``), pruned afterwards: nobody else's BuildKit cache is touched.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline import engine
from pipeline.build.base import base_name, mirror_reference
from pipeline.build.containertest import CONFIG_PATH, GATEWAY_PORT, gateway_config
from pipeline.build.dockerignore import context_size
from pipeline.build.plan import BuildOptions
from pipeline.build.record import BuildRecord
from pipeline.build.run import run_build
from pipeline.config import Settings
from pipeline.gitref import ReleaseContext
from pipeline.oci.labels import ImageTags
from pipeline.release.tags import image_tags

COPY_IGNORE = (".git", ".venv", "build", ".mypy_cache", ".ruff_cache", ".pytest_cache")
LABEL_KEY = "pipeline.bench"
REPEAT = 3  # cached rebuilds are timed this many times; the figure is their median


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    target: float
    unit: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.value <= self.target

    def line(self) -> str:
        shown = f"{self.value:.3f}" if self.unit == "" else f"{self.value:.2f} {self.unit}"
        target = f"{self.target:g}" + (f" {self.unit}" if self.unit else "")
        verdict = "ok" if self.ok else "OVER TARGET"
        extra = f"  [{self.detail}]" if self.detail else ""
        return f"{self.name:<52} {shown:>12}  (target <= {target}) {verdict}{extra}"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


@dataclass(frozen=True)
class Builds:
    """What the bench measured: the builds, the base's size and the container starts."""

    cold: BuildRecord
    noops: list[BuildRecord]
    changes: list[BuildRecord]
    multi: BuildRecord
    base_sizes: dict[str, int]
    healthy: list[float]
    context_bytes: int


def figures(builds: Builds, host: str) -> list[Figure]:
    """The figure table from the measured builds (pure): each figure, its target, its detail."""
    cold, multi, latest = builds.cold, builds.multi, builds.changes[-1]
    noop, changed = _median(builds.noops), _median(builds.changes)
    base = builds.base_sizes
    return [
        Figure(
            "rebuild with nothing changed / cold build",
            ratio(noop.duration_s, cold.duration_s),
            0.05,
            detail=f"median {noop.duration_s:.2f}s of {_seconds(builds.noops)} / "
            f"{cold.duration_s:.2f}s",
        ),
        Figure(
            "rebuild after a change in gateway/ / cold build",
            ratio(changed.duration_s, cold.duration_s),
            0.20,
            detail=f"median {changed.duration_s:.2f}s of {_seconds(builds.changes)} / "
            f"{cold.duration_s:.2f}s",
        ),
        Figure(
            "amd64+arm64 build / amd64-only build (both cold)",
            ratio(multi.duration_s, cold.duration_s),
            1.5,
            detail=f"{multi.duration_s:.2f}s / {cold.duration_s:.2f}s",
        ),
        Figure(
            "runtime image size minus base image size",
            (latest.sizes[host] - base[host]) / 1e6,
            40,
            "MB",
            f"compressed, {host}: {latest.sizes[host] / 1e6:.1f} - {base[host] / 1e6:.1f} MB",
        ),
        Figure(
            f"container start to healthy, median of {len(builds.healthy)}",
            statistics.median(builds.healthy),
            2,
            "s",
            ", ".join(f"{s:.2f}" for s in builds.healthy),
        ),
        Figure(
            "build context sent",
            builds.context_bytes / 1e6,
            1,
            "MB",
            "what .dockerignore lets through, i.e. what a fresh builder receives; BuildKit "
            f"sent {int(cold.extra.get('context_bytes', 0)) / 1000:.1f} kB to this one",
        ),
    ]


@dataclass
class _Bench:
    """One bench run: a copy of the tree, its own image name, cache mounts and records."""

    tree: Path
    tmp: Path
    run_id: str
    host: str
    settings: Settings
    context: ReleaseContext
    tags: ImageTags
    environ: Mapping[str, str]
    report: Callable[[str], None]
    records: list[BuildRecord] = field(default_factory=list)

    def build(self, label: str, cache: str, cache_id: str, **changes: object) -> BuildRecord:
        options = BuildOptions(
            platforms=(self.host,),
            load=True,
            cache=f"local:{self.tmp / cache}",
            build_args=(f"UV_CACHE_ID=bench-{self.run_id}-{cache_id}",),
            progress="quiet",
        )
        options = replace(options, **changes)  # type: ignore[arg-type]
        result = run_build(
            root=self.tree,
            settings=self.settings,
            build_context=self.context,
            tags=self.tags,
            options=options,
            environ=self.environ,
        )
        record = result.record
        self.records.append(record)
        self.report(
            f"  {label}: {record.duration_s:.2f}s, {record.cached_steps}/"
            f"{record.total_steps} steps cached, context sent "
            f"{int(record.extra.get('context_bytes', 0)) / 1000:.1f} kB"
        )
        return record

    def rebuilds(self) -> tuple[list[BuildRecord], list[BuildRecord]]:
        """Cached rebuilds with nothing changed, then an edit-rebuild loop in gateway/."""
        noops = [self.build("rebuild, nothing changed", "cache-a", "a") for _ in range(REPEAT)]
        marker = self.tree / "gateway" / "__init__.py"
        changes = []
        for n in range(REPEAT):  # the first one follows the cold build
            marker.write_text(marker.read_text() + f"\n# bench change {self.run_id} {n}\n")
            changes.append(self.build("rebuild after a change in gateway/", "cache-a", "a"))
        return noops, changes


def run_bench(
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    *,
    starts: int = 5,
    report: Callable[[str], None] = print,
) -> list[Figure]:
    """Every figure of the bench; the builds' records are reported as they finish."""
    run_id = uuid.uuid4().hex[:8]
    bench_settings = settings._replace(image=f"pipeline-bench/gateway-{run_id}")
    context, tags = image_tags(environ, root, bench_settings)
    host = engine.daemon_info().platform
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    bench = _Bench(tmp / "tree", tmp, run_id, host, bench_settings, context, tags, environ, report)
    try:
        shutil.copytree(
            root, bench.tree, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=True
        )
        cold = bench.build("cold build, linux/amd64", "cache-a", "a", no_cache=True)
        noops, changes = bench.rebuilds()
        multi = bench.build(
            "cold build, linux/amd64 + linux/arm64",
            "cache-b",
            "b",
            no_cache=True,
            platforms=("linux/amd64", "linux/arm64"),
        )
        base = engine.registry_sizes(
            mirror_reference(base_name(settings, root), engine.daemon_info().mirrors)
        )
        healthy = _start_to_healthy(changes[-1].reference, tmp, run_id, starts)
        builds = Builds(cold, noops, changes, multi, base, healthy, context_size(root))
        table = figures(builds, host)
        for figure in table:
            report(figure.line())
        return table
    finally:
        engine.remove_labelled(f"{LABEL_KEY}={run_id}")
        for record in bench.records:
            engine.remove_images(record.full_tags)
        engine.prune_cache_mounts(f"bench-{run_id}-")  # the cold builds' uv caches
        shutil.rmtree(tmp, ignore_errors=True)


def _median(records: list[BuildRecord]) -> BuildRecord:
    return sorted(records, key=lambda r: r.duration_s)[len(records) // 2]


def _seconds(records: list[BuildRecord]) -> str:
    return ", ".join(f"{r.duration_s:.2f}" for r in records)


def _start_to_healthy(image: str, tmp: Path, run_id: str, starts: int) -> list[float]:
    """Seconds from ``docker run`` to the engine's healthy status (read-only root, tmpfs /tmp,
    the docker.test config without an upstream: /healthz needs none)."""
    config = tmp / "gateway.toml"
    config.write_text(gateway_config("http://upstream:8000"), encoding="utf-8")
    config.chmod(0o644)
    seconds = []
    for n in range(starts):
        started = time.monotonic()
        container = engine.run_container(
            image,
            name=f"bench-{run_id}-{n}",
            labels={LABEL_KEY: run_id},
            read_only=True,
            tmpfs=["/tmp"],
            volumes=[(str(config), CONFIG_PATH, "ro")],
            publish=[("127.0.0.1:", GATEWAY_PORT)],
            pull="never",
        )
        engine.wait_healthy(container.id, 60)
        seconds.append(time.monotonic() - started)
        engine.remove_labelled(f"{LABEL_KEY}={run_id}")
    return seconds
