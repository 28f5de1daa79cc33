"""`drumbeat import-contacts` as a real process: the API's CSV import run on a local file by the operator,
with rejected rows named by file line, a report of every rejection, and a dry run that stores nothing."""

from __future__ import annotations

import csv
import io
import re

import psycopg
from psycopg.rows import dict_row

from app.commands.import_contacts import Progress
from tests.support.processes import committed_tenant, drumbeat

# Lines: 1 header, 2 created, 3 bad phone, 4 blank (not a row), 5 bad email, 6-7 one row (a quoted cell
# with a line break), created, 8 repeats line 2 (an update), 9 national format (created), 10 too few cells.
FILE = (
    "phone,email,first_name,last_name,plan,tags\n"
    "+12125550100,ada@example.com,Ada,Lovelace,pro,vip;nyc\n"
    "123-456-7890,,Bad,Phone,,\n"
    "\n"
    "+12125550102,not-an-email,Bad,Email,,\n"
    '+12125550103,,"Multi\nLine",Name,,\n'
    "+1 212 555 0100,,,King,,\n"
    "(415) 555-0101,,Alan,Turing,,\n"
    "+12125550106\n"
)


def import_cli(tmp_path, db_url: str, *args: str):
    return drumbeat("import-contacts", *args, cwd=tmp_path, DATABASE_URL=db_url)


def contacts_of(db_url: str, workspace_id: str) -> dict[str, dict]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM drumbeat.contacts WHERE workspace_id = %s", (workspace_id,))
        return {row["phone"] or row["email"]: row for row in rows}


def counts(summary: str) -> dict[str, int]:
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^  (\w+) +([\d,]+)", summary, re.M)}


def test_imports_good_rows_and_names_the_lines_of_bad_ones(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    (tmp_path / "contacts.csv").write_text(FILE)
    result = import_cli(
        tmp_path, db_url, "contacts.csv", "--workspace", workspace, "--rejects", "rejects.csv"
    )
    assert result.returncode == 0, result.stderr
    assert counts(result.stdout) == {"created": 3, "updated": 1, "rejected": 3}
    assert "    line 3: phone: not a valid number for region US\n" in result.stdout
    assert "    line 5: email: " in result.stdout
    assert "    line 10: has 1 cells, the header row has 6\n" in result.stdout
    # Not a terminal: progress lines on stderr, the last with the final counts.
    size = len(FILE.encode())
    assert result.stderr.splitlines()[-1].startswith(
        f"import-contacts: {size} B / {size} B (100%)  4 imported  3 rejected"
    )

    stored = contacts_of(db_url, workspace)
    assert set(stored) == {"+12125550100", "+12125550103", "+14155550101"}
    ada = stored["+12125550100"]
    assert (ada["first_name"], ada["last_name"], ada["email"]) == ("Ada", "King", "ada@example.com")
    assert ada["fields"] == {"plan": "pro"} and ada["tags"] == ["vip", "nyc"]
    assert stored["+12125550103"]["first_name"] == "Multi\nLine"

    with (tmp_path / "rejects.csv").open(newline="") as report:
        rejected = [(r["line"], r["row"], r["field"]) for r in csv.DictReader(report)]
    assert rejected == [("3", "2", "phone"), ("5", "3", "email"), ("10", "7", "")]


def test_dry_run_checks_everything_and_stores_nothing(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    (tmp_path / "uk.csv").write_text("phone,first_name\n020 7946 0018,Alan\n")
    result = import_cli(tmp_path, db_url, "uk.csv", "--workspace", workspace, "--region", "gb", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Checked (dry run: rolled back, nothing stored) uk.csv")
    assert counts(result.stdout) == {"created": 1, "updated": 0, "rejected": 0}
    assert contacts_of(db_url, workspace) == {}


def test_a_missing_workspace_is_named_and_nothing_is_imported(db_url, tmp_path):
    (tmp_path / "contacts.csv").write_text(FILE)
    missing = "00000000-0000-0000-0000-000000000000"
    result = import_cli(tmp_path, db_url, "contacts.csv", "--workspace", missing)
    assert result.returncode == 1
    assert f"workspace {missing} not found" in result.stderr
    malformed = import_cli(tmp_path, db_url, "contacts.csv", "--workspace", "acme")
    assert malformed.returncode == 2
    assert "'acme' is not a workspace id" in malformed.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM drumbeat.contacts").fetchone()[0] == 0


def test_a_missing_file_is_a_usage_error(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    result = import_cli(tmp_path, db_url, "nowhere.csv", "--workspace", workspace)
    assert result.returncode == 2
    assert result.stderr == "drumbeat import-contacts: nowhere.csv: no such file\n"


def test_a_file_without_a_phone_or_email_column_imports_nothing(db_url, tmp_path):
    workspace = str(committed_tenant(db_url).workspace_id)
    (tmp_path / "names.csv").write_text("first_name,company\nAda,Engines\n")
    result = import_cli(tmp_path, db_url, "names.csv", "--workspace", workspace)
    assert result.returncode == 1
    assert "names.csv: the header row needs a phone or an email column" in result.stderr
    assert contacts_of(db_url, workspace) == {}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line():
    screen, now = Terminal(), [100.0]
    progress = Progress(2_000_000, screen, clock=lambda: now[0])
    now[0] = 101.0
    progress.update(1_000_000, 900, 100)
    now[0] = 101.05
    progress.update(1_500_000, 1_400, 100)  # within a tenth of a second of the last draw: not drawn
    now[0] = 102.0
    progress.finish(1_900, 100)
    frames = screen.getvalue().split("\r\x1b[K")
    assert frames == [
        "",
        "1.0 MB / 2.0 MB (50%)  900 imported  100 rejected  1,000 rows/s",
        "2.0 MB / 2.0 MB (100%)  1,900 imported  100 rejected  1,000 rows/s\n",
    ]


def test_progress_in_a_log_is_a_line_per_tenth_of_the_file():
    log = io.StringIO()
    progress = Progress(1_000, log)
    for read in (50, 150, 160, 350, 990, 1_000):
        progress.update(read, read // 10, 0)
    progress.finish(100, 0)
    shown = [line.split("  ")[0] for line in log.getvalue().splitlines()]
    assert shown == [
        "import-contacts: 150 B / 1.0 kB (15%)",
        "import-contacts: 350 B / 1.0 kB (35%)",
        "import-contacts: 990 B / 1.0 kB (99%)",
        "import-contacts: 1.0 kB / 1.0 kB (100%)",
    ]
