"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml, .env.example) keep the structure that
matters, and .env.example documents exactly the variables the code reads: adding an os.environ read without
documenting it fails here. Nothing is built or started (no Docker needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import dotenv
import pytest
import yaml

from app.core.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DRUMBEAT_SERVICES = ("migrate", "api", "worker")

# The ways the code reads a variable: os.environ.get("X"), environ["X"], env.get("X") (app/core/settings.py's
# alias), os.getenv("X"), _flag("X", ...) (app/core/settings.py's boolean reader).
ENV_READ = re.compile(
    r"""(?:\b(?:environ|env)\.get|\bgetenv|\b(?:_flag|_whole_number|_rate_per_second))\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|\benviron\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
# VAR=value or, for an optional one, "# VAR=value" at the start of a line.
ENV_EXAMPLE_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
# ${VAR}, ${VAR:-default}, ${VAR:?error}: variables Compose takes from .env to fill in docker-compose.yml.
COMPOSE_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def variables_read_by_code() -> set[str]:
    names: set[str] = set()
    for package in ("app", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for match in ENV_READ.finditer(path.read_text()):
                names.add(match.group(1) or match.group(2))
    return names


def env_example() -> dict[str, tuple[bool, str]]:
    """name -> (set, value) for every variable .env.example documents, set or commented out."""
    documented: dict[str, tuple[bool, str]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := ENV_EXAMPLE_LINE.match(line):
            commented, name, value = match.groups()
            assert name not in documented, f".env.example documents {name} twice"
            documented[name] = (commented is None, value)
    return documented


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def command(service: dict) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else list(value)


def test_env_example_documents_exactly_the_variables_the_code_reads(compose):
    read = variables_read_by_code()
    # The extraction itself still works: these are read in each of the ways ENV_READ knows.
    assert {
        "DATABASE_URL",
        "SMTP_STARTTLS",
        "DRUMBEAT_DATA_DIR",
        "DRUMBEAT_LOG_LEVEL",
        "DRUMBEAT_PORT",
        "DRUMBEAT_MAX_BODY_BYTES",
        "DRUMBEAT_RATE_LIMIT",
    } <= read
    for_compose = set(COMPOSE_INTERPOLATION.findall((ROOT / "docker-compose.yml").read_text()))
    documented = set(env_example())
    assert read - documented == set(), "read by the code but missing from .env.example"
    assert documented - read - for_compose == set(), ".env.example documents variables nothing reads"
    assert for_compose - documented == set(), "docker-compose.yml interpolates variables .env.example lacks"


def test_every_env_example_variable_is_explained():
    text = (ROOT / ".env.example").read_text()
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        variables = [line for line in lines if ENV_EXAMPLE_LINE.match(line)]
        prose = [line for line in lines if line.startswith("#") and not ENV_EXAMPLE_LINE.match(line)]
        assert not variables or prose, f"no comment explains {variables}"


def test_env_example_is_safe_and_valid_as_is(monkeypatch):
    """Copied unchanged, it starts Drumbeat in a mode that sends nothing and holds no secret."""
    documented = env_example()
    for name in ("TWILIO_AUTH_TOKEN", "SMTP_PASSWORD", "DRUMBEAT_SECRET_KEY", "DRUMBEAT_JWT_SECRET"):
        assert documented[name] == (True, ""), f"{name} must be present and empty in .env.example"
    assert documented["DRUMBEAT_TRANSPORT"] == (True, "outbox")
    assert not documented["DATABASE_URL"][0], "DATABASE_URL stays commented out (Compose sets its own)"
    for name in documented:
        monkeypatch.delenv(name, raising=False)
    values = dotenv.dotenv_values(ROOT / ".env.example")
    assert set(values) == {name for name, (is_set, _) in documented.items() if is_set}
    for name, value in values.items():
        monkeypatch.setenv(name, value or "")
    settings = load_settings(database_url="postgresql://drumbeat@postgres:5432/drumbeat")
    assert settings.transport == "outbox" and not settings.production


def test_compose_services_and_their_order(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *DRUMBEAT_SERVICES}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert command(services["migrate"]) == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["restart"] == "unless-stopped"
    assert command(services["worker"])[0] == "worker"
    assert services["worker"]["stop_grace_period"], "the worker needs time to finish its batches"


def test_compose_postgres_keeps_its_data_and_reports_health(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume, target = postgres["volumes"][0].split(":")[:2]
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]


def test_compose_api_listens_and_its_health_check_hits_healthz(compose):
    api = compose["services"]["api"]
    args = command(api)
    assert args[0] == "api"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = args[args.index("--port") + 1]
    assert f"{port}:{port}" in [str(mapping) for mapping in api["ports"]]
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check
    assert "curl" not in check and "wget" not in check, "python:*-slim has neither"


def test_compose_drumbeat_services_share_one_image_and_use_the_bundled_postgres(compose):
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    for name in DRUMBEAT_SERVICES:
        service = services[name]
        assert service["build"] == "."
        assert service["image"] == services["api"]["image"]
        assert service["env_file"] == [{"path": ".env", "required": False}]
        url = urlsplit(service["environment"]["DATABASE_URL"])
        assert url.scheme == "postgresql"
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == postgres["POSTGRES_USER"]
        assert url.path == "/" + postgres["POSTGRES_DB"]
        assert url.password == postgres["POSTGRES_PASSWORD"], "the same password, from the same variable"


def test_dockerfile_runs_drumbeat_as_a_non_root_user():
    instructions = dockerfile_instructions()
    stage = final_stage()
    base = stage[0][1].split()[0]
    assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", base), base
    entrypoints = [args for name, args in instructions if name == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["drumbeat"]
    commands = [args for name, args in instructions if name == "CMD"]
    assert json.loads(commands[-1]) == ["api", "--host", "0.0.0.0"]
    users = [args for name, args in stage if name == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" not in {name for name, _ in instructions}, "health checks belong to Compose"
    installs = " ".join(args for name, args in instructions if name == "RUN" and "pip" in args)
    assert "[dev]" not in installs


def test_dockerignore_keeps_secrets_out_and_what_the_build_copies_in():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:  # Docker's rule: the last matching pattern wins, "!" re-includes
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
                verdict = not negated
        return verdict

    for secret in (".env", ".env.production", ".git", ".venv"):
        assert ignored(secret), f"{secret} must not reach the build context"
    for name, args in dockerfile_instructions():
        if name == "COPY" and "--from=" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                assert not ignored(source.rstrip("/")), f"COPY {source} is excluded by .dockerignore"
