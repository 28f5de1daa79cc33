"""`drumbeat import-contacts FILE.csv --workspace ID`: the CSV import the API runs too (app/core/csv_import.py),
run by the operator on a local file. The header row names the columns: phone, email, first_name, last_name,
company, title, timezone, tags (separated by ; or ,); any other column becomes a custom field. Rows are
upserted, matched on phone, then email: a row matching a stored contact updates it (empty cells leave
stored values alone), so importing the same file twice creates nothing new. Bad rows are rejected with
the line and the reason; the rest is imported.

The file is imported in one transaction: an interrupted import (Ctrl-C, a lost connection) leaves nothing
behind. Progress goes to stderr, the summary to stdout."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from app.commands import EXIT_OK, EXIT_USAGE, CommandError, fail, settings_for, workspace_id, workspace_name

HELP = "import a CSV file of contacts into a workspace (upsert on phone, then email)"

READ_SIZE = 64 * 1024
SHOWN_REJECTIONS = 5  # in the summary; --rejects writes them all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.csv", help="a UTF-8 CSV file with a header row")
    parser.add_argument("--workspace", required=True, type=workspace_id, help="workspace id")
    parser.add_argument(
        "--region",
        type=str.upper,
        help="where phone numbers written without +country are read (default: DRUMBEAT_DEFAULT_REGION, else US)",
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        metavar="REPORT.csv",
        help="write every rejected row (line, field, reason) here",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check every row against the database, then roll back"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    import psycopg

    from app.core.errors import DrumbeatError, domain_error

    if not args.file.is_file():
        problem = "is not a file" if args.file.exists() else "no such file"
        return fail("import-contacts", f"{args.file}: {problem}", EXIT_USAGE)
    try:
        settings = settings_for("import-contacts")
        region = phone_region(args.region, settings.default_region)
        with psycopg.connect(settings.database_url) as conn:
            name = workspace_name(conn, args.workspace)
        progress = Progress(args.file.stat().st_size)
        importer = asyncio.run(import_file(settings.database_url, args, region, progress))
    except CommandError as error:
        return fail("import-contacts", str(error), error.code)
    except DrumbeatError as error:  # the file as a whole is unusable: not UTF-8, no phone/email column
        message = error.message if error.field == "file" else str(error)
        return fail("import-contacts", f"{args.file}: {message} (nothing was imported)")
    except psycopg.OperationalError as error:
        return fail("import-contacts", f"cannot reach the database: {error} (nothing was imported)")
    except psycopg.Error as error:
        return fail("import-contacts", f"{domain_error(error) or error} (nothing was imported)")
    if args.rejects:
        write_rejects(args.rejects, importer)
    print_summary(args, name, importer)
    return EXIT_OK


def phone_region(option: str | None, default: str) -> str:
    """--region, else DRUMBEAT_DEFAULT_REGION: a region `phonenumbers` knows, or every national number
    would be rejected."""
    import phonenumbers

    region = option or default
    if region not in phonenumbers.SUPPORTED_REGIONS:
        source = "--region" if option else "DRUMBEAT_DEFAULT_REGION"
        raise CommandError(f"{source} {region!r} is not a country code such as US or GB", EXIT_USAGE)
    return region


async def import_file(url: str, args: argparse.Namespace, region: str, progress: Progress):
    """The importer, after feeding it the whole file in one transaction (rolled back on a dry run)."""
    import psycopg
    from psycopg.rows import dict_row

    from app.core.csv_import import Importer, read_into

    connecting = psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    # One transaction for the file; the importer's savepoints (one per refused chunk) nest in it.
    async with await connecting as conn, conn.transaction() as transaction:
        importer = Importer(conn, args.workspace, region)

        def report(bytes_read: int) -> None:
            progress.update(bytes_read, importer.created + importer.updated, importer.rejected)

        await read_into(importer, file_chunks(args.file, report))
        progress.finish(importer.created + importer.updated, importer.rejected)
        if args.dry_run:
            raise psycopg.Rollback(transaction)
    return importer


async def file_chunks(path: Path, report: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The file's bytes; `report` hears how many were read once the importer is done with each chunk."""
    read = 0
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            yield chunk
            read += len(chunk)
            report(read)


class Progress:
    """Import progress on stderr. On a terminal: one line redrawn in place (at most ten times a second).
    Otherwise (a log, CI): a line each time another tenth of the file is read, so logs stay short."""

    def __init__(self, total_bytes: int, stream=None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total_bytes
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.clock = clock
        self.started = clock()
        self.drawn_at = 0.0
        self.tenths_shown = 0
        self.bytes_read = 0

    def update(self, bytes_read: int, imported: int, rejected: int) -> None:
        self.bytes_read = bytes_read
        now = self.clock()
        if self.terminal:
            if now - self.drawn_at >= 0.1:
                self.drawn_at = now
                self.stream.write(f"\r\x1b[K{self.line(imported, rejected)}")
                self.stream.flush()
            return
        tenths = bytes_read * 10 // self.total if self.total else 10
        if self.tenths_shown < tenths < 10:  # the last tenth is finish()'s: its counts are final
            self.tenths_shown = tenths
            print(f"import-contacts: {self.line(imported, rejected)}", file=self.stream, flush=True)

    def finish(self, imported: int, rejected: int) -> None:
        self.bytes_read = self.total
        if self.terminal:
            self.stream.write(f"\r\x1b[K{self.line(imported, rejected)}\n")
        else:
            print(f"import-contacts: {self.line(imported, rejected)}", file=self.stream)
        self.stream.flush()

    def line(self, imported: int, rejected: int) -> str:
        percent = 100 * self.bytes_read // self.total if self.total else 100
        rate = (imported + rejected) / max(self.clock() - self.started, 1e-3)
        return (
            f"{_size(self.bytes_read)} / {_size(self.total)} ({percent}%)  {imported:,} imported  "
            f"{rejected:,} rejected  {rate:,.0f} rows/s"
        )


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def rejections(importer) -> list[tuple[int, int, str | None, str]]:
    """(line, row, field, reason) of each rejected row, in file order."""
    return [
        (importer.rejected_lines[r.row], r.row, r.field, r.reason or "")
        for r in sorted(importer.results, key=lambda r: r.row)
        if r.outcome == "rejected"
    ]


def write_rejects(path: Path, importer) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["line", "row", "field", "reason"])
        writer.writerows(rejections(importer))


def print_summary(args: argparse.Namespace, workspace: str, importer) -> None:
    verb = "Checked (dry run: rolled back, nothing stored)" if args.dry_run else "Imported"
    print(f"{verb} {args.file} into {workspace} ({args.workspace}):")
    print(f"  created   {importer.created:>9,}  new contacts")
    print(
        f"  updated   {importer.updated:>9,}  matched a stored contact (or an earlier row) on phone or email"
    )
    print(f"  rejected  {importer.rejected:>9,}")
    rejected = rejections(importer)
    for line, _row, _field, reason in rejected[:SHOWN_REJECTIONS]:
        print(f"    line {line}: {reason}")
    if len(rejected) > SHOWN_REJECTIONS:
        more = f"written to {args.rejects}" if args.rejects else "list them all with --rejects REPORT.csv"
        print(f"    ... and {len(rejected) - SHOWN_REJECTIONS:,} more ({more})")
    elif args.rejects and rejected:
        print(f"    (also written to {args.rejects})")
