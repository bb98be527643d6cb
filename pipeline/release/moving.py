"""Moving tags (``latest``, ``1.2``, ``1``, ``develop``...) as ONE step that completes or is
undone.

1. read every moving tag's current digest and manifest first (a failed read writes nothing);
2. write the tags that already existed, then the new ones (an existing tag can always be put
   back; a new one can only be removed where the registry deletes tags);
3. on a failure, put every written tag back at its previous digest (a tag that did not exist
   is deleted, where the registry allows it) and raise ``MovingTagsError``, whose one line says
   exactly what was written, what was restored and what could not be.

A registry has no multi-tag transaction: between steps 2 and 3 a reader may see the tags
split, never after ``move`` returns or raises (unless the registry also refuses the restore,
which the error then names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.errors import RegistryError
from pipeline.oci.manifest import Manifest
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import TransientRegistryError
from pipeline.registry.transport import AuthError

Log = Callable[[str], None]


@dataclass(frozen=True)
class Move:
    """What one ``move`` did. ``previous``: tag -> digest before (None: the tag was new)."""

    digest: str
    previous: dict[str, str | None]
    written: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


class MovingTagsError(RegistryError):
    """Writing the moving tags failed; the ones written were put back (or are named)."""

    def __init__(
        self,
        *,
        digest: str,
        written: Sequence[str],
        restored: Mapping[str, str | None],
        unrestored: Mapping[str, str],
        cause: str,
    ) -> None:
        self.digest = digest
        self.written = list(written)
        self.restored = dict(restored)
        self.unrestored = dict(unrestored)
        self.cause = cause
        super().__init__(self._text(), hint=self._hint())

    def _text(self) -> str:
        failed = f"moving the tags to {self.digest} failed ({self.cause})"
        if not self.written:
            return f"{failed}; no moving tag was written"
        back = ", ".join(f"{t} -> {d}" if d else f"{t} deleted" for t, d in self.restored.items())
        parts = [f"{failed}; written: {', '.join(self.written)}"]
        if self.restored:
            parts.append(f"restored: {back}")
        if self.unrestored:
            parts.append(
                "NOT restored: " + ", ".join(f"{t} ({why})" for t, why in self.unrestored.items())
            )
        return "; ".join(parts)

    def _hint(self) -> str:
        if self.unrestored:
            return "the moving tags are split: run the push again to move them all"
        return "the moving tags are as before: run the push again"

    def as_record(self) -> dict[str, object]:
        return {
            "result": "restored" if not self.unrestored else "split",
            "digest": self.digest,
            "written": list(self.written),
            "restored": {t: d or "" for t, d in self.restored.items()},
            "unrestored": dict(self.unrestored),
            "error": self.cause,
        }


def move(
    client: RegistryClient,
    repository: str,
    manifest: Manifest,
    tags: Sequence[str],
    *,
    log: Log = print,
) -> Move:
    """Point every tag of ``tags`` at ``manifest``, all or none (see the module docstring)."""
    previous = {tag: client.digest(repository, tag) for tag in tags}
    olds: dict[str, Manifest] = {}
    for digest in dict.fromkeys(d for d in previous.values() if d and d != manifest.digest):
        olds[digest] = client.manifest(repository, digest)
    todo = [t for t in tags if previous[t] != manifest.digest]
    unchanged = tuple(t for t in tags if previous[t] == manifest.digest)
    order = [t for t in todo if previous[t]] + [t for t in todo if not previous[t]]
    written: list[str] = []
    for tag in order:
        try:
            client.put_manifest(repository, tag, manifest)
        except RegistryError as exc:
            raise _undo(client, repository, manifest, written, previous, olds, exc, log) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C half-way: put them back, then stop
            _undo(client, repository, manifest, written, previous, olds, exc, log)
            raise
        written.append(tag)
        log(f"tagged {client.host}/{repository}:{tag} -> {manifest.digest}")
    return Move(manifest.digest, previous, tuple(written), unchanged)


def _undo(
    client: RegistryClient,
    repository: str,
    manifest: Manifest,
    written: Sequence[str],
    previous: dict[str, str | None],
    olds: dict[str, Manifest],
    exc: BaseException,
    log: Log,
) -> MovingTagsError:
    restored: dict[str, str | None] = {}
    unrestored: dict[str, str] = {}
    for tag in reversed(written):
        before = previous[tag]
        try:
            if before:
                client.put_manifest(repository, tag, olds[before])
            else:
                client.delete_tag(repository, tag)
        except (TransientRegistryError, AuthError) as failure:
            unrestored[tag] = f"left at {manifest.digest}: {failure.one_line()}"
            continue
        except RegistryError:
            why = "the registry cannot delete a tag" if not before else "refused"
            unrestored[tag] = f"left at {manifest.digest}: {why}"
            continue
        restored[tag] = before
        log(f"restored {client.host}/{repository}:{tag} -> {before or '(deleted)'}")
    return MovingTagsError(
        digest=manifest.digest,
        written=list(written),
        restored=restored,
        unrestored=unrestored,
        cause=exc.one_line() if isinstance(exc, RegistryError) else "interrupted",
    )
