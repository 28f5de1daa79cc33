"""Streamed CSV import of contacts, for the API (a request body) and `drumbeat import-contacts` (a file).
The bytes are read chunk by chunk (never whole), decoded incrementally (UTF-8, an optional BOM), cut into
lines, grouped into whole CSV records (a quoted field may span lines) and parsed by csv.reader; each row
is validated at the edge (app.core.validation), and valid rows are upserted in chunks of CHUNK_ROWS
through drumbeat_api.upsert_contacts, which matches on phone, then email. What the import holds at any
time is one chunk of rows plus the per-row results asked for (by default only the rejected rows),
whatever the file's size.

Rows are checked twice: here for the shapes (phone, email, time zone), and by the contract for what
only the database knows (an email that belongs to another contact than the phone). A chunk the contract
refuses is re-checked with drumbeat_api.check_contacts: its bad rows are rejected with the contract's
reason, rows that repeat an earlier row of the same chunk wait for the next round (so they apply as
updates, in file order), and the rest is upserted. Re-uploading a file therefore creates nothing new."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from app.core.db import fetch_all
from app.core.errors import Invalid
from app.core.queries import queries
from app.core.validation import STANDARD_FIELDS, clean_contact, require_reachable, sql_field

Q = queries("api_contacts")
CHUNK_ROWS = 1000
MAX_RECORD_CHARS = 1_048_576  # one CSV record (a runaway quoted field) may not exceed this
DUPLICATE = "matches the same contact as "
TAG_SEPARATORS = re.compile(r"[;,]")

Outcome = Literal["created", "updated", "rejected"]


class ImportRow(msgspec.Struct):
    row: int
    outcome: Outcome
    contact_id: UUID | None = None
    field: str | None = None
    reason: str | None = None


class ImportSummary(msgspec.Struct):
    created: int
    updated: int
    rejected: int
    total: int
    results: list[ImportRow]


@dataclass
class Pending:
    row: int
    line: int  # the file line the row starts on
    contact: dict[str, Any]


@dataclass
class Importer:
    db: psycopg.AsyncConnection
    workspace_id: UUID
    region: str
    listing: Literal["rejected", "all"] = "rejected"
    chunk_rows: int = CHUNK_ROWS
    created: int = 0
    updated: int = 0
    rejected: int = 0
    results: list[ImportRow] = field(default_factory=list)
    # row -> the file line it starts on, for rejected rows: `drumbeat import-contacts` names lines (a
    # quoted cell may span lines, blank lines are not rows); the API's results keep to rows.
    rejected_lines: dict[int, int] = field(default_factory=dict)
    batch: list[Pending] = field(default_factory=list)
    batch_keys: set[str] = field(default_factory=set)

    # -- outcomes

    def reject(self, row: int, line: int, field_name: str | None, reason: str) -> None:
        self.rejected += 1
        self.rejected_lines[row] = line
        self.results.append(ImportRow(row, "rejected", None, field_name, reason))

    def accept(self, row: int, contact_id: UUID, created: bool) -> None:
        if created:
            self.created += 1
        else:
            self.updated += 1
        if self.listing == "all":
            self.results.append(ImportRow(row, "created" if created else "updated", contact_id))

    def summary(self) -> ImportSummary:
        self.results.sort(key=lambda r: r.row)  # deferred duplicates are decided after later rows
        total = self.created + self.updated + self.rejected
        return ImportSummary(self.created, self.updated, self.rejected, total, self.results)

    # -- rows

    async def add(self, row: int, line: int, raw: dict[str, Any]) -> None:
        if any("\x00" in str(value) for value in raw.values()):
            self.reject(row, line, None, "contains a NUL character (Postgres text cannot hold one)")
            return
        try:
            contact = clean_contact(raw, self.region)
            require_reachable(contact)
        except Invalid as error:
            self.reject(row, line, error.field, str(error))
            return
        keys = {f"{key}:{contact[key]}" for key in ("phone", "email") if contact.get(key)}
        if keys & self.batch_keys or len(self.batch) >= self.chunk_rows:
            await self.flush()  # a repeated phone/email applies after the row it repeats, as an update
        self.batch.append(Pending(row, line, contact))
        self.batch_keys |= keys

    async def flush(self) -> None:
        batch, self.batch, self.batch_keys = self.batch, [], set()
        while batch:
            contacts = [p.contact for p in batch]
            try:
                async with self.db.transaction():  # a savepoint: a refused chunk leaves no trace
                    await self.write(batch)
            except Invalid:
                batch = await self.sort_out(batch, contacts)
                continue
            return

    async def write(self, batch: list[Pending]) -> None:
        """Upsert the rows (a row without a time zone gets its phone's, if the contact has none)."""
        contacts = [p.contact for p in batch]
        rows = await fetch_all(
            self.db, Q["upsert_contacts"], {"workspace_id": self.workspace_id, "contacts": Jsonb(contacts)}
        )
        for pending, written in zip(batch, rows, strict=True):
            self.accept(pending.row, written["contact_id"], written["created"])

    async def sort_out(self, batch: list[Pending], contacts: list[dict[str, Any]]) -> list[Pending]:
        """After the contract refused a chunk: reject its bad rows, write the clean ones, and return the
        rows that repeat an earlier row of the chunk, for the next round (they apply as updates)."""
        errors = await fetch_all(
            self.db, Q["check_contacts"], {"workspace_id": self.workspace_id, "contacts": Jsonb(contacts)}
        )
        if not errors:  # pragma: no cover - upsert_contacts and check_contacts run the same checks
            raise Invalid("the import was refused by the database", "file")
        by_row: dict[int, list[dict[str, Any]]] = {}
        for error in errors:
            by_row.setdefault(error["i"], []).append(error)
        clean: list[Pending] = []
        later: list[Pending] = []
        for i, pending in enumerate(batch):
            found = by_row.get(i)
            real = [e for e in found or [] if not e["message"].startswith(DUPLICATE)]
            if not found:
                clean.append(pending)
            elif real:
                name = sql_field(real[0]["field"])
                message = real[0]["message"]
                self.reject(pending.row, pending.line, name, f"{name}: {message}" if name else message)
            else:
                later.append(pending)
        if clean:
            await self.write(clean)
        return later


# -- bytes -> lines -> records


async def decoded_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Lines (with their endings) of a UTF-8 byte stream, decoded incrementally; a BOM is dropped."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    tail = ""
    line_count = 0
    async for chunk in chunks:
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError:
            raise Invalid(
                f"not UTF-8 text (near line {line_count + 1}): save the CSV as UTF-8", "file"
            ) from None
        if not text:
            continue
        parts = (tail + text).split("\n")
        tail = parts.pop()
        line_count += len(parts)
        for part in parts:
            yield part + "\n"
        if len(tail) > MAX_RECORD_CHARS:
            raise Invalid(f"line {line_count + 1} is longer than {MAX_RECORD_CHARS} characters", "file")
    try:
        tail += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise Invalid("not UTF-8 text (at the end): save the CSV as UTF-8", "file") from None
    if tail:
        yield tail


class _Feed:
    """The line source of one csv.reader, refilled between reads. Only whole records are put in, so the
    reader never runs dry in the middle of one (a dry feed ends the current read, not the reader)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self.lines:
            raise StopIteration
        return self.lines.pop()


async def csv_records(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[str]]:
    """CSV records of a byte stream."""
    async for _, record in numbered_records(chunks):
        yield record


async def numbered_records(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, list[str]]]:
    """CSV records of a byte stream, each with the line it starts on (1-based). A record ends at a line
    end outside quotes: lines are grouped until their count of quote characters is even (RFC 4180
    quoting), then handed to csv.reader."""
    feed = _Feed()
    reader = csv.reader(feed, strict=False)
    pending: list[str] = []
    pending_chars = 0
    quotes = 0
    first_line = 1  # the line pending[0] is
    async for line in decoded_lines(chunks):
        pending.append(line)
        pending_chars += len(line)
        quotes += line.count('"')
        if quotes % 2:
            if pending_chars > MAX_RECORD_CHARS:
                raise Invalid(
                    f"a quoted field is never closed (a record exceeds {MAX_RECORD_CHARS} characters)", "file"
                )
            continue
        for numbered in _records_of_lines(reader, feed, pending, first_line):
            yield numbered
        first_line += len(pending)
        pending, pending_chars, quotes = [], 0, 0
    # an unclosed quote at the end: let csv.reader make what it can of it
    for numbered in _records_of_lines(reader, feed, pending, first_line):
        yield numbered


def _records_of_lines(
    reader: Iterator[list[str]], feed: _Feed, lines: list[str], first_line: int
) -> Iterator[tuple[int, list[str]]]:
    """The records csv.reader makes of these whole lines, each with the line it starts on."""
    feed.lines = lines[::-1]
    while feed.lines:
        line = first_line + len(lines) - len(feed.lines)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise Invalid(f"not a readable CSV file: {error}", "file") from None
        yield line, record


# -- multipart/form-data


async def multipart_file(chunks: AsyncIterable[bytes], boundary: str) -> AsyncIterator[bytes]:
    """The bytes of the first file part (a part with a filename, or named "file") of a multipart/form-data
    stream, passed on as they arrive; other parts are skipped."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    buffer = b"\r\n"  # the body opens with the first delimiter, minus its leading line break
    state = "preamble"
    async for chunk in chunks:
        buffer += chunk
        while True:
            if state == "headers":
                if len(buffer) < 2:
                    break
                if buffer.startswith(b"--"):  # the closing delimiter
                    raise Invalid("the multipart body has no file part: send the CSV as a file", "file")
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > 16384:
                        raise Invalid("a multipart part's headers are too long", "file")
                    break
                headers = buffer[:end].decode("latin-1").lower()
                buffer = buffer[end + 4 :]
                wanted = "filename=" in headers or 'name="file"' in headers
                state = "file" if wanted else "skip"
                continue
            at = buffer.find(delimiter)
            if at < 0:
                keep = len(delimiter) - 1  # a delimiter may straddle two chunks
                if state == "file" and len(buffer) > keep:
                    yield buffer[:-keep]
                buffer = buffer[-keep:] if len(buffer) > keep else buffer
                break
            if state == "file":
                if at:
                    yield buffer[:at]
                return
            buffer = buffer[at + len(delimiter) :]
            state = "headers"
    raise Invalid("the multipart body ended before a complete file part", "file")


def content_boundary(content_type: str) -> str | None:
    """The boundary parameter of a multipart/form-data content type."""
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return match.group(1) if match else None


# -- header and rows


@dataclass
class Columns:
    names: list[str]  # per column: a standard key, "tags", or "fields.<name>"

    @classmethod
    def from_header(cls, header: list[str]) -> Columns:
        names: list[str] = []
        for n, cell in enumerate(header, start=1):
            label = cell.strip()
            if not label:
                raise Invalid(f"column {n} of the header row has no name", "file")
            key = label.lower()
            name = key if key in (*STANDARD_FIELDS, "tags") else f"fields.{label}"
            if name in names:
                raise Invalid(f"column {label!r} appears twice in the header row", "file")
            names.append(name)
        if "phone" not in names and "email" not in names:
            raise Invalid(
                "the header row needs a phone or an email column "
                "(columns: phone, email, first_name, last_name, company, title, timezone, tags, others become fields)",
                "file",
            )
        return cls(names)

    def contact(self, cells: list[str]) -> dict[str, Any]:
        """A row as upsert input: empty cells are left out (they never clear a stored value)."""
        contact: dict[str, Any] = {}
        custom: dict[str, str] = {}
        for name, cell in zip(self.names, cells, strict=True):
            if not cell.strip():
                continue
            if name.startswith("fields."):
                custom[name[7:]] = cell.strip()
            elif name == "tags":
                contact["tags"] = [t.strip() for t in TAG_SEPARATORS.split(cell) if t.strip()]
            else:
                contact[name] = cell
        if custom:
            contact["fields"] = custom
        return contact


async def import_contacts(
    db: psycopg.AsyncConnection,
    workspace_id: UUID,
    chunks: AsyncIterable[bytes],
    *,
    region: str,
    listing: Literal["rejected", "all"] = "rejected",
    chunk_rows: int | None = None,
) -> ImportSummary:
    """Import a CSV byte stream into the workspace (within the caller's transaction)."""
    importer = Importer(db, workspace_id, region, listing, chunk_rows or CHUNK_ROWS)
    return await read_into(importer, chunks)


async def read_into(importer: Importer, chunks: AsyncIterable[bytes]) -> ImportSummary:
    """Feed a CSV byte stream to an importer, row by row; its counts grow as it goes (what
    `drumbeat import-contacts` shows as progress)."""
    columns: Columns | None = None
    row = 0
    async for line, record in numbered_records(chunks):
        if columns is None:
            if not any(cell.strip() for cell in record):
                continue  # blank lines before the header
            columns = Columns.from_header(record)
            continue
        if not any(cell.strip() for cell in record):
            continue  # blank lines are not rows
        row += 1
        if len(record) != len(columns.names):
            reason = f"has {len(record)} cells, the header row has {len(columns.names)}"
            importer.reject(row, line, None, reason)
            continue
        await importer.add(row, line, columns.contact(record))
    if columns is None:
        raise Invalid("the file is empty: expected a header row, then one contact per row", "file")
    await importer.flush()
    return importer.summary()
