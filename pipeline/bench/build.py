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
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline import engine
from pipeline.build.base import base_name, mirror_reference
from pipeline.build.containertest import CONFIG_PATH, GATEWAY_PORT, gateway_config
from pipeline.build.dockerignore import context_size
from pipeline.build.plan import BuildOptions
from pipeline.build.record import BuildRecord
from pipeline.build.run import run_build
from pipeline.config import Settings
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
    bench_settings = replace(settings, image=f"pipeline-bench/gateway-{run_id}")
    context, tags = image_tags(environ, root, bench_settings)
    host = engine.daemon_info().platform
    records: list[BuildRecord] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        tree = tmp / "tree"
        shutil.copytree(root, tree, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=True)

        def build(label: str, cache: str, cache_id: str, **changes: object) -> BuildRecord:
            options = BuildOptions(
                platforms=(host,),
                load=True,
                cache=f"local:{tmp / cache}",
                build_args=(f"UV_CACHE_ID=bench-{run_id}-{cache_id}",),
                progress="quiet",
            )
            options = replace(options, **changes)  # type: ignore[arg-type]
            result = run_build(
                root=tree,
                settings=bench_settings,
                build_context=context,
                tags=tags,
                options=options,
                environ=environ,
            )
            record = result.record
            records.append(record)
            report(
                f"  {label}: {record.duration_s:.2f}s, {record.cached_steps}/"
                f"{record.total_steps} steps cached, context sent "
                f"{int(record.extra.get('context_bytes', 0)) / 1000:.1f} kB"
            )
            return record

        cold = build("cold build, linux/amd64", "cache-a", "a", no_cache=True)
        noops = [build("rebuild, nothing changed", "cache-a", "a") for _ in range(REPEAT)]
        marker = tree / "gateway" / "__init__.py"
        changes = []
        for n in range(REPEAT):  # an edit-rebuild loop: the first one follows the cold build
            marker.write_text(marker.read_text() + f"\n# bench change {run_id} {n}\n")
            changes.append(build("rebuild after a change in gateway/", "cache-a", "a"))
        noop = _median(noops)
        changed = _median(changes)
        multi = build(
            "cold build, linux/amd64 + linux/arm64",
            "cache-b",
            "b",
            no_cache=True,
            platforms=("linux/amd64", "linux/arm64"),
        )
        base = engine.registry_sizes(
            mirror_reference(base_name(settings, root), engine.daemon_info().mirrors)
        )
        latest = changes[-1]  # the image the tags now name
        added = (latest.sizes[host] - base[host]) / 1e6
        healthy = _start_to_healthy(latest.reference, tmp, run_id, starts)
        figures = [
            Figure(
                "rebuild with nothing changed / cold build",
                ratio(noop.duration_s, cold.duration_s),
                0.05,
                detail=f"median {noop.duration_s:.2f}s of {_seconds(noops)} / "
                f"{cold.duration_s:.2f}s",
            ),
            Figure(
                "rebuild after a change in gateway/ / cold build",
                ratio(changed.duration_s, cold.duration_s),
                0.20,
                detail=f"median {changed.duration_s:.2f}s of {_seconds(changes)} / "
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
                added,
                40,
                "MB",
                f"compressed, {host}: {latest.sizes[host] / 1e6:.1f} - {base[host] / 1e6:.1f} MB",
            ),
            Figure(
                f"container start to healthy, median of {starts}",
                statistics.median(healthy),
                2,
                "s",
                ", ".join(f"{s:.2f}" for s in healthy),
            ),
            Figure(
                "build context sent",
                context_size(root) / 1e6,
                1,
                "MB",
                "what .dockerignore lets through, i.e. what a fresh builder receives; BuildKit "
                f"sent {int(cold.extra.get('context_bytes', 0)) / 1000:.1f} kB to this one",
            ),
        ]
        for figure in figures:
            report(figure.line())
        return figures
    finally:
        engine.remove_labelled(f"{LABEL_KEY}={run_id}")
        for record in records:
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
