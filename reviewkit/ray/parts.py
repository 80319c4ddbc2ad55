"""The output folder of a resumable run: one Parquet part file per finished batch.

Each batch an actor finishes is written as its own file, first under a hidden temporary
name and then renamed, so a part is either whole or absent: a killed driver, actor or
machine loses at most the batches in flight. A part is named by a digest of its ids, so a
batch that Ray retries after a crash rewrites the same name instead of adding a second
copy. A re-run reads the ids already written and scores only the rest; the settings of the
first run are kept in ``_reviewkit.json``, and the model its engines actually loaded in
``_model.json``, so a re-run with other labels or another model (another ``LLM_MODEL``, a
GPU node picking the pod model) cannot mix two kinds of scores in one folder.

One run at a time: a run holds a lease (``_lease.json``, refreshed while it runs, taken over
once it is older than :data:`LEASE_SECONDS`), so a second run on the same folder is refused
instead of deleting the first one's half-written files; the files a run removes on start are
only those of runs that no longer hold the lease. Paths may be local (shared by all nodes,
e.g. a network volume) or any URI pyarrow knows (``s3://...``, ``gs://...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
SETTINGS_FILE = "_reviewkit.json"  # pyarrow skips names starting with "_" or "."
MODEL_FILE = "_model.json"
LEASE_FILE = "_lease.json"
#: A lease not refreshed for this long belongs to a run that is gone (killed driver, lost node).
LEASE_SECONDS = 120.0
_TMP = ".tmp-"  # temporary names: .<final name>.tmp-<run id>-<random>


class FolderBusy(RuntimeError):
    """Another run holds the output folder's lease."""


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

    def remove_temporary(self, keep_run: str | None = None) -> int:
        """Delete what interrupted runs left half-written (not run ``keep_run``'s); return how many.

        Call it while holding the lease: then no other run is writing.
        """
        stale = [
            n
            for n in self._names()
            if n.startswith(".") and _TMP in n and (keep_run is None or f"{_TMP}{keep_run}-" not in n)
        ]
        for name in stale:
            self.fs.delete_file(self._path(name))
        return len(stale)

    def write_part(self, table: pa.Table, ids: Sequence[Any], run: str = "") -> str:
        """Write ``table`` as the part of these ``ids``, atomically; return its file name."""
        name = f"{PART_PREFIX}{digest(ids)}{PART_SUFFIX}"
        with self._writing(name, run) as stream:
            pq.write_table(table, stream)
        return name

    @contextlib.contextmanager
    def _writing(self, name: str, run: str = "") -> Iterator[Any]:
        """A stream to a temporary file that becomes ``name`` when closed (a rename: whole or absent)."""
        temporary = self._path(f".{name}{_TMP}{run}-{uuid.uuid4().hex}")
        try:
            with self.fs.open_output_stream(temporary) as stream:
                yield stream
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(temporary)
            raise
        self.fs.move(temporary, self._path(name))

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
            raise RuntimeError(
                f"the output folder {self.uri} holds {len(repeated)} id(s) more than once "
                f"(e.g. {repeated.field('values')[0].as_py()!r}); it was not written by one "
                "resumable run. Use a new folder."
            )
        return ids

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the run's settings, or refuse to resume a folder written with other ones."""
        path = self._path(SETTINGS_FILE)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            previous = self._read_json(SETTINGS_FILE)
            if previous != settings:
                changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
                raise ValueError(
                    f"the output folder {self.uri} holds results of another run "
                    + "; ".join(f"{k}: {previous.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
                    + ". Resume with the same settings, or write to a new folder."
                )
            return
        self._write_json(SETTINGS_FILE, settings)

    def claim_model(self, model_id: str) -> None:
        """Record the model the engines loaded, or refuse one other than the recorded model.

        Called by each scoring actor once its engine is loaded: the driver cannot know it
        (``model=None`` resolves on each node: ``LLM_MODEL``, a GPU or not).
        """
        path = self._path(MODEL_FILE)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            self._write_json(MODEL_FILE, {"model": model_id})
        recorded = self._read_json(MODEL_FILE).get("model")
        if recorded != model_id:
            raise ValueError(
                f"the output folder {self.uri} holds scores of the model {recorded!r}, and this run's "
                f"engine loaded {model_id!r}: resume with the same model (engine_options, LLM_MODEL, "
                "the same kind of node), or write to a new folder"
            )

    # -- the lease: one run at a time ---------------------------------------------------------
    def acquire(self, run: str) -> None:
        """Take the folder for run ``run``, or raise :class:`FolderBusy` naming the run that has it."""
        path = self._path(LEASE_FILE)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            lease = self._read_json(LEASE_FILE)
            age = time.time() - float(lease.get("updated", 0))
            if lease.get("run") != run and age < LEASE_SECONDS:
                raise FolderBusy(
                    f"the output folder {self.uri} is in use by another run (run {lease.get('run')} on "
                    f"{lease.get('host')}, pid {lease.get('pid')}, refreshed {age:.0f} s ago): wait for it to "
                    f"finish, or use another folder (a lease not refreshed for {LEASE_SECONDS:.0f} s is taken over)"
                )
        self._refresh(run)
        time.sleep(0.05)  # two runs starting at once: the later write wins, the other sees it
        if self._read_json(LEASE_FILE).get("run") != run:
            raise FolderBusy(f"the output folder {self.uri} was taken by another run starting at the same time")

    def _refresh(self, run: str) -> None:
        self._write_json(
            LEASE_FILE, {"run": run, "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time()}, run
        )

    def release(self, run: str) -> None:
        """Give the lease back (only if this run still holds it)."""
        try:
            if self._read_json(LEASE_FILE).get("run") == run:
                self.fs.delete_file(self._path(LEASE_FILE))
        except (OSError, ValueError):
            pass

    def keep_lease(self, run: str, stop: threading.Event, every: float = LEASE_SECONDS / 4) -> threading.Thread:
        """Refresh the lease every ``every`` seconds until ``stop`` is set (a daemon thread)."""

        def refresh() -> None:
            while not stop.wait(every):
                try:
                    self._refresh(run)
                except OSError:
                    pass  # a missed refresh only shortens the lease

        thread = threading.Thread(target=refresh, daemon=True, name="reviewkit-ray-lease")
        thread.start()
        return thread

    # -- small JSON files -------------------------------------------------------------------
    def _read_json(self, name: str) -> dict[str, Any]:
        with self.fs.open_input_stream(self._path(name)) as stream:
            value = json.loads(stream.read().decode())
        if not isinstance(value, dict):
            raise ValueError(f"{self._path(name)} is not a JSON object")
        return value

    def _write_json(self, name: str, value: dict[str, Any], run: str = "") -> None:
        with self._writing(name, run) as stream:
            stream.write(json.dumps(value, sort_keys=True, indent=1).encode())


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
