"""The output folder of a resumable run: one Parquet part file per finished batch.

Each batch an actor finishes is written as its own file, first under a hidden temporary
name and then renamed, so a part is either whole or absent: a killed driver, actor or
machine loses at most the batches in flight. A part is named by a digest of its ids, so a
batch that Ray retries after a crash rewrites the same name instead of adding a second
copy. A re-run reads the ids already written and scores only the rest; the settings of the
first run are kept in ``_reviewkit.json`` so a re-run with other labels or another model
cannot mix two kinds of scores in one folder. Paths may be local (shared by all nodes,
e.g. a network volume) or any URI pyarrow knows (``s3://...``, ``gs://...``).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
SETTINGS_FILE = "_reviewkit.json"  # pyarrow skips names starting with "_" or "."


def digest(ids: Sequence[Any]) -> str:
    """A name for a batch from its ids (``repr`` keeps 1 and "1" apart)."""
    return hashlib.sha256("\x1f".join(map(repr, ids)).encode()).hexdigest()[:32]


class OutputFolder:
    """A folder of part files on a pyarrow filesystem."""

    def __init__(self, uri: str | os.PathLike[str]) -> None:
        uri = os.fspath(uri)
        self.uri = uri
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
        self.root = self.root.rstrip("/") or "/"

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # sent to actors by its URI
        return OutputFolder, (self.uri,)

    def create(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def _names(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)

    def part_paths(self) -> list[str]:
        return [self._path(n) for n in self._names() if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)]

    def remove_temporary(self) -> int:
        """Delete what an interrupted run left half-written; return how many files."""
        stale = [n for n in self._names() if n.startswith(".") and ".tmp-" in n]
        for name in stale:
            self.fs.delete_file(self._path(name))
        return len(stale)

    def write_part(self, table: pa.Table, ids: Sequence[Any]) -> str:
        """Write ``table`` as the part of these ``ids``, atomically; return its file name."""
        name = f"{PART_PREFIX}{digest(ids)}{PART_SUFFIX}"
        temporary = self._path(f".{name}.tmp-{uuid.uuid4().hex}")
        with self.fs.open_output_stream(temporary) as stream:
            pq.write_table(table, stream)
        self.fs.move(temporary, self._path(name))  # a rename: the part appears whole or not at all
        return name

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every part's rows (None if there is none)."""
        import pyarrow.dataset as pads

        paths = self.part_paths()
        if not paths:
            return None
        return pads.dataset(paths, filesystem=self.fs, format="parquet").to_table(columns=columns)

    def written_ids(self, id_column: str) -> pa.Array | None:
        """The ids already written (None if no part exists); refuses a folder holding an id twice."""
        table = self.read([id_column])
        if table is None:
            return None
        ids = table.column(id_column).combine_chunks()
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(repeated):
            raise RuntimeError(f"the output folder {self.uri} holds {len(repeated)} id(s) more than once "
                               f"(e.g. {repeated.field('values')[0].as_py()!r}); it was not written by one "
                               "resumable run. Use a new folder.")
        return ids

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the run's settings, or refuse to resume a folder written with other ones."""
        path = self._path(SETTINGS_FILE)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            with self.fs.open_input_stream(path) as stream:
                previous = json.loads(stream.read().decode())
            if previous != settings:
                changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
                raise ValueError(
                    f"the output folder {self.uri} holds results of another run "
                    + "; ".join(f"{k}: {previous.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
                    + ". Resume with the same settings, or write to a new folder.")
            return
        temporary = self._path(f".{SETTINGS_FILE}.tmp-{uuid.uuid4().hex}")
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(json.dumps(settings, sort_keys=True, indent=1).encode())
        self.fs.move(temporary, path)


def drop_written(batch: pa.Table, id_column: str, written: Any) -> pa.Table:
    """The rows of ``batch`` whose id is not in ``written`` (a Ray Data map_batches task;
    ``written`` may be an ObjectRef, so the ids travel to each node once, not with each task)."""
    if not isinstance(written, pa.Array):
        import ray

        written = ray.get(written)
    ids = batch.column(id_column)
    if ids.type != written.type:
        written = written.cast(ids.type)
    return batch.filter(pc.invert(pc.is_in(ids, value_set=written)))
