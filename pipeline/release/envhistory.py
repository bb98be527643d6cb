"""The history of an environment tag, kept IN the registry, ordered by the registry.

Each entry is a tag ``<env>-<N>`` at the digest the environment was given, ``N`` a sequence
number written as 20 digits (so entries sort as text, and older entries named by a UTC stamp
``yyyymmddHHMMSSffffff`` keep their place). The next entry is the highest ``N`` the registry
holds plus one, whatever the writer's clock says; the write is conditional (the tag must not
exist yet) and checked after (another writer that took the same ``N`` moves us to ``N + 1``).

The history is written BEFORE the environment tag moves, so a failure between the two leaves a
history that says where the environment was going, and a re-run converges: it finds its entry
already written and only moves the tag. An environment tag written outside the pipeline (a raw
PUT, or before the first promotion) is recorded as an entry of its own before it is moved, so
"previous" is never lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pipeline.errors import RegistryError
from pipeline.oci.manifest import Manifest
from pipeline.registry.client import RegistryClient

Log = Callable[[str], None]
WIDTH = 20
ATTEMPTS = 5


@dataclass(frozen=True, order=True)
class Entry:
    sequence: int
    tag: str
    digest: str


def entry_tag(environment: str, sequence: int) -> str:
    return f"{environment}-{sequence:0{WIDTH}d}"


def entry_tags(environment: str, tags: Iterable[str]) -> list[tuple[int, str]]:
    """This environment's history tags with their sequence numbers, oldest first."""
    pattern = re.compile(rf"^{re.escape(environment)}-(\d{{{WIDTH}}})$")
    return sorted((int(m.group(1)), t) for t in tags if (m := pattern.match(t)))


def read(client: RegistryClient, repository: str, environment: str) -> list[Entry]:
    """Every entry of the environment's history, oldest first (the registry's order)."""
    entries = []
    for sequence, tag in entry_tags(environment, client.tags(repository)):
        digest = client.digest(repository, tag)
        if digest is not None:
            entries.append(Entry(sequence, tag, digest))
    return entries


def append(
    client: RegistryClient,
    repository: str,
    environment: str,
    manifest: Manifest,
    *,
    log: Log = print,
) -> Entry:
    """Write the next entry for ``manifest``: read-modify-write on the registry's sequence,
    conditional on the tag being free, checked after the write."""
    for _ in range(ATTEMPTS):
        entries = read(client, repository, environment)
        sequence = (entries[-1].sequence if entries else 0) + 1
        tag = entry_tag(environment, sequence)
        if client.digest(repository, tag) is not None:
            continue  # taken since the listing: read again
        client.put_manifest(repository, tag, manifest)
        if client.digest(repository, tag) == manifest.digest:
            return Entry(sequence, tag, manifest.digest)
        log(f"history entry {tag} was taken by another promotion: trying the next one")
    raise RegistryError(
        f"cannot append to the history of {environment!r}: {ATTEMPTS} concurrent writers "
        "took every entry I tried",
        hint="run the promotion again",
    )


def previous(entries: Sequence[Entry], current: str | None) -> list[Entry]:
    """Pure: the rollback candidates, best first: the entries before the environment's current
    digest was last recorded, newest first, one per digest, none at ``current``."""
    last = max((i for i, e in enumerate(entries) if e.digest == current), default=len(entries))
    seen: set[str] = set()
    result = []
    for entry in reversed(entries[:last]):
        if entry.digest != current and entry.digest not in seen:
            seen.add(entry.digest)
            result.append(entry)
    return result
