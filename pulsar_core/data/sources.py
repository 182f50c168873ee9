"""Where data comes from: files, directories, globs and pyarrow URIs (s3://, gs://, file://).

Resolves each URI to concrete files on a pyarrow filesystem and reads them as pandas chunks.
CSV is read block by block with every column as text, so one bad value cannot fail the whole
read: the validators turn it into a counted `bad_type:<column>` rejection instead.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pulsar_core.data.errors import DataContractError, DataUnavailable

Container = Literal["csv", "parquet"]
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
NULL_TEXT = ["", "\\N", "NULL", "null", "NaN", "nan", "None"]
_GLOB_CHARS = "*?["
# A CSV header longer than this is no header: the file is not a CSV (or has no line breaks).
MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    """One concrete input file on a pyarrow filesystem."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def container(self) -> Container:
        """csv or parquet, by extension, else by the Parquet magic bytes."""
        name = self.path.lower()
        if name.endswith(PARQUET_SUFFIXES):
            return "parquet"
        if name.endswith(CSV_SUFFIXES):
            return "csv"
        with self.fs.open_input_file(self.path) as handle:
            return "parquet" if handle.read(4) == b"PAR1" else "csv"

    def columns(self) -> list[str]:
        """Column names from the Parquet schema or the CSV header line (read in bounded
        memory: a file without line breaks is not read whole)."""
        with unavailable_if_remote(self.fs, self.uri):
            try:
                if self.container == "parquet":
                    return list(pq.read_schema(self.fs.open_input_file(self.path)).names)
                with self.fs.open_input_stream(self.path, compression="detect") as stream:
                    head = stream.read(MAX_HEADER_BYTES + 1)
                first, newline, _ = head.partition(b"\n")
                if not newline and len(head) > MAX_HEADER_BYTES:
                    raise DataContractError(
                        f"{self.uri!r} has no line break in its first {MAX_HEADER_BYTES:,} "
                        "bytes: it is not a CSV export (or not this file); check the data URI")
                # utf-8-sig: a BOM (Excel, PowerShell exports) is not part of the first name
                text = first.rstrip(b"\r").decode("utf-8-sig")
            except (pa.ArrowInvalid, UnicodeDecodeError) as err:
                raise DataContractError(f"cannot read {self.uri!r}: {err}") from err
        return next(csv.reader([text]), [])


@contextmanager
def unavailable_if_remote(fs: pafs.FileSystem | None, uri: str) -> Iterator[None]:
    """OSError from a remote filesystem (no network, no such bucket host) -> DataUnavailable;
    from the local one (permissions, a directory) -> DataContractError."""
    try:
        yield
    except OSError as err:
        if fs is not None and isinstance(fs, pafs.LocalFileSystem):
            raise DataContractError(f"cannot read {uri!r}: {err}") from err
        raise DataUnavailable(
            f"cannot reach {uri!r}: {err}; check the network and the credentials in the "
            "environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS)") from err


def _split_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        try:
            with unavailable_if_remote(None, uri):
                found: tuple[Any, str] = pafs.FileSystem.from_uri(uri)
                return found
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataContractError(
                f"cannot open data URI {uri!r}: {err}; use a path, file://, s3://, gs:// or "
                "hdfs:// URI that pyarrow supports (with credentials in the environment)"
            ) from err
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def _is_data_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith((".", "_")) and name.lower().endswith(
        CSV_SUFFIXES + PARQUET_SUFFIXES
    )


def _expand_glob(fs: pafs.FileSystem, pattern: str) -> list[str]:
    if isinstance(fs, pafs.LocalFileSystem):
        return sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    cut = min(pattern.index(c) for c in _GLOB_CHARS if c in pattern)
    base = pattern[:cut].rsplit("/", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, pattern))


def _glob_sources(uri: str) -> list[Source]:
    first = min(uri.index(c) for c in _GLOB_CHARS if c in uri)
    if "://" not in uri:
        pattern = str(Path(uri).expanduser().absolute())
        fs: pafs.FileSystem = pafs.LocalFileSystem()
        scheme = ""
    else:
        base_uri = uri[:first].rsplit("/", 1)[0]
        fs, base = _split_uri(base_uri)
        pattern = base.rstrip("/") + "/" + uri[len(base_uri) + 1:]
        scheme = uri.split("://", 1)[0] + "://"
    with unavailable_if_remote(fs, uri):
        paths = _expand_glob(fs, pattern)
    if not paths:
        raise DataContractError(f"no files match {uri!r}; check the glob and the data URI")
    return [Source(fs, p, scheme + p) for p in paths]


def _expand_one(uri: str) -> list[Source]:
    if any(c in uri for c in _GLOB_CHARS):
        return _glob_sources(uri)
    fs, path = _split_uri(uri)
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    with unavailable_if_remote(fs, uri):
        info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise DataContractError(f"no such file or directory: {uri!r}; check the data URI")
    if info.type != pafs.FileType.Directory:
        return [Source(fs, path, uri)]
    with unavailable_if_remote(fs, uri):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    paths = sorted(i.path for i in infos if i.is_file and _is_data_file(i.path))
    if not paths:
        raise DataContractError(
            f"directory {uri!r} holds no .parquet or .csv files; point the data URI at them"
        )
    return [Source(fs, p, scheme + p) for p in paths]


def resolve_sources(uris: str | Path | Sequence[str | Path]) -> list[Source]:
    """Concrete files for the given URIs, in a stable order; every URI must match something."""
    items = [uris] if isinstance(uris, str | Path) else list(uris)
    if not items:
        raise DataContractError("no data URI given; pass at least one file, directory or glob")
    return [source for uri in items for source in _expand_one(str(uri))]


def iter_csv_chunks(source: Source, block_bytes: int) -> Iterator[pd.DataFrame]:
    """The CSV as pandas chunks of about `block_bytes`, all columns as nullable text."""
    names = source.columns()
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        null_values=NULL_TEXT,
        strings_can_be_null=True,
    )
    with unavailable_if_remote(source.fs, source.uri):
        stream = source.fs.open_input_stream(source.path, compression="detect")
        try:
            reader = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(block_size=block_bytes),
                convert_options=convert,
            )
            empty = True
            for batch in reader:
                empty = False
                yield batch.to_pandas()
            if empty:  # a header and no rows: an empty chunk, so callers need no special case
                yield pd.DataFrame({name: pd.Series(dtype="string") for name in names})
        except pa.ArrowInvalid as err:
            raise DataContractError(f"cannot parse CSV {source.uri!r}: {err}") from err
        finally:
            stream.close()


def iter_parquet_chunks(source: Source, batch_rows: int) -> Iterator[pd.DataFrame]:
    """A Parquet file as pandas chunks of `batch_rows` rows (row groups streamed)."""
    with unavailable_if_remote(source.fs, source.uri), \
            source.fs.open_input_file(source.path) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
            yield batch.to_pandas()


def parquet_rows(source: Source) -> int:
    """Rows in a Parquet file, from its footer (no data read)."""
    with unavailable_if_remote(source.fs, source.uri), \
            source.fs.open_input_file(source.path) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def read_parquet(source: Source, filters: list[tuple[str, str, int]] | None) -> pd.DataFrame:
    """A whole Parquet file, with equality filters pushed down to the reader."""
    try:
        with unavailable_if_remote(source.fs, source.uri):
            table = pq.read_table(source.path, filesystem=source.fs, filters=filters or None)
    except pa.ArrowInvalid as err:
        raise DataContractError(f"cannot read Parquet {source.uri!r}: {err}") from err
    # One block per column and Arrow buffers freed as they convert: ~3x faster on big files.
    return table.to_pandas(split_blocks=True, self_destruct=True)
