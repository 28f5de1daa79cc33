"""Process configuration from the environment and a `.env` file (docs/ARCHITECTURE.md, "The contract":
process configuration), validated at start with messages that say which variable is wrong and why.
README: "Configuration" has the table of every variable.

Development just works: without DRUMBEAT_SECRET_KEY a key is made once and kept in the data directory
(development_secret_key), and DRUMBEAT_PUBLIC_URL defaults to the local server's address. Production
requires the key and has no public URL default."""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

TWILIO_API = "https://api.twilio.com"
TWILIO_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
# Twilio-compatible providers (SignalWire) name accounts by a project id, a UUID.
PROJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Supabase's pooler answers in transaction mode on this port (Supavisor, and the PgBouncer before it).
SUPABASE_TRANSACTION_POOLER_PORT = "6543"


def transaction_pooler_problem(url: str | None) -> str | None:
    """Why Drumbeat cannot run through url when it names Supabase's transaction pooler, or None. Session
    state does not survive there: the migrator's advisory lock, the worker's LISTEN and its session-level
    SET ROLE (which would even reach other clients of the pooler), and the API's prepared statements.
    Other poolers cannot be told from a direct connection by their address."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url) if url else {}
    except ProgrammingError:
        return None  # not a connection string at all: load_settings or the connection says so
    host, port = params.get("host") or "", str(params.get("port") or "")
    if host.endswith((".supabase.com", ".supabase.co")) and port == SUPABASE_TRANSACTION_POOLER_PORT:
        return (
            f"DATABASE_URL names Supabase's transaction pooler ({host}:{port}), which Drumbeat cannot use: "
            "connect to its session pooler (port 5432) or directly, see README 'Connections and poolers'"
        )
    return None


def account_sid_problem(sid: str, base_url: str) -> str | None:
    """Why TWILIO_ACCOUNT_SID cannot be right for the API at base_url, or None."""
    if TWILIO_ACCOUNT_SID.match(sid):
        return None
    if base_url.rstrip("/") != TWILIO_API and PROJECT_ID.match(sid):
        return None
    return (
        "TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits (Twilio console, Account Info), or, with "
        "DRUMBEAT_TWILIO_BASE_URL naming a compatible provider such as SignalWire, its project id"
    )


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    env: str = "development"
    transport: str | None = None  # "outbox" forces the outbox; None picks per channel
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_base_url: str = TWILIO_API
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    public_url: str | None = None
    # True when public_url is the development default (this machine's API, which no provider can reach).
    public_url_defaulted: bool = False
    secret_key: bytes | None = None
    # A 'sending' delivery older than this was lost with its worker. Why 120 s: a live worker never keeps one
    # that long (a send is bounded by its transport's timeout, 30 s at most, and a record call retries for
    # 60 s through a Postgres fault); and a lease that expires under a live worker costs no duplicate (its
    # late record is refused, the delivery stays unknown and an SMS is reconciled), only a later "sent".
    delivery_lease_seconds: int = 120
    jwt_secret: bytes | None = None  # HS256 tokens (Supabase: the project's JWT secret)
    jwks_url: str | None = None  # or asymmetric tokens verified against this JWKS
    jwt_audience: str = "authenticated"
    default_region: str = "US"  # phone numbers written without +country are read in this region
    send_concurrency: int = 8  # messages of one batch in flight at once (1: one after another)
    log_format: str = "auto"  # json, text, or auto: text on a terminal, JSON otherwise
    log_level: str = "INFO"
    max_body_bytes: int = 1 << 20  # a larger request body is refused with 413 (the CSV import has its own)
    # Per caller (an API key, or a JWT's subject): a token bucket refilled at this rate, holding up to `burst`.
    rate_limit_per_second: float = 50.0  # 0: no limit
    rate_limit_burst: int = 100
    # Outgoing webhooks: private and loopback targets only when true (development, tests); messages in flight
    # at once to one endpoint, across all workers (a slow endpoint holds that many sends, never the others').
    webhook_allow_private: bool = False
    webhook_concurrency: int = 8

    @property
    def production(self) -> bool:
        return self.env == "production"

    def has_credentials(self, channel: str) -> bool:
        if channel == "sms":
            return bool(self.twilio_account_sid and self.twilio_auth_token)
        return bool(self.smtp_host)

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(env={self.env!r}, transport={self.transport!r}, public_url={self.public_url!r})"


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def load_dotenv(path: Path | None = None) -> Path | None:
    """Read variables from a `.env` file (DRUMBEAT_ENV_FILE, else ./.env) into the environment; a variable
    already in the environment wins. Returns the file read, if any."""
    import dotenv

    named = os.environ.get("DRUMBEAT_ENV_FILE")
    path = path or Path(named or ".env")
    if not path.is_file():
        if named:
            raise ConfigError(f"DRUMBEAT_ENV_FILE names {str(path)!r}, which is not a file")
        return None
    dotenv.load_dotenv(path, override=False)
    return path


SECRET_KEY_FILE = "secret_key"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def development_key_path() -> Path:
    """Where development keeps the DRUMBEAT_SECRET_KEY it made: beside the embedded Postgres's data."""
    from app.core.embedded import data_dir

    return data_dir() / SECRET_KEY_FILE


def development_secret_key(path: Path) -> bytes:
    """The key kept in `path`, made on first use. Kept rather than made per process, so that links the
    worker signs verify in the API, links sent before a restart still work after it, and console sessions
    survive restarts. ConfigError naming the file when it cannot be read or made, or holds no usable key."""
    try:
        if not path.exists():
            _publish_new_key(path)
        key = path.read_text().strip()
    except OSError as error:
        raise ConfigError(
            f"DRUMBEAT_SECRET_KEY is not set and the development key cannot be kept in {path} "
            f"({error.strerror or error}): set DRUMBEAT_SECRET_KEY, or DRUMBEAT_DATA_DIR to a writable directory"
        ) from error
    if len(key) < 32:
        raise ConfigError(
            f"{path} (the development DRUMBEAT_SECRET_KEY) holds fewer than 32 characters: delete it to "
            "have a new one made, or set DRUMBEAT_SECRET_KEY"
        )
    return key.encode()


def _publish_new_key(path: Path) -> None:
    """Write a new key to a private draft (mkstemp makes it mode 0600), then hard-link it into place: the
    key appears whole or not at all, and when two processes start together the first link wins and both
    read that one key (the loser's draft is dropped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_KEY_FILE}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process's key is in place: that one is the key
            os.link(draft, path)
    finally:
        os.unlink(draft)


def local_server_url(host: str, port: int) -> str:
    """The URL of an API listening on host:port, as a browser on this machine reaches it (an API listening
    on every address is reached at 127.0.0.1)."""
    if host in ("", "0.0.0.0", "::"):
        host = DEFAULT_HOST
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _tcp_port(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name} must be a TCP port number, got {value!r}")
    return int(value)


# Each in-flight message holds a thread and, with SMTP, a connection to the relay.
MAX_SEND_CONCURRENCY = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _whole_number(name: str, default: int, minimum: int) -> int:
    value = os.environ.get(name) or str(default)
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _rate_per_second(name: str, default: float) -> float:
    """Requests per second: `50`, `50/s`, `600/min` or `0.5`; 0 turns the limit off."""
    value = os.environ.get(name) or str(default)
    number, _, unit = value.strip().lower().partition("/")
    per = {"": 1, "s": 1, "min": 60}.get(unit.strip())
    try:
        rate = float(number)
    except ValueError:
        rate = math.nan
    if per is None or not math.isfinite(rate) or rate < 0:
        raise ConfigError(
            f"{name} must be requests per second such as 50 or 50/s (or per minute: 600/min), "
            f"0 for no limit, got {value!r}"
        )
    return rate / per


def load_settings(database_url: str | None = None) -> Settings:
    """Settings from the environment; database_url (the embedded server's, say) stands in for an unset
    DATABASE_URL. In development, an unset DRUMBEAT_SECRET_KEY is the key kept in the data directory (made
    on the first load) and an unset DRUMBEAT_PUBLIC_URL is the local server's URL."""
    env = os.environ
    database_url = env.get("DATABASE_URL") or database_url
    if not database_url:
        raise ConfigError("DATABASE_URL is not set: export it (postgresql://user@host:5432/dbname)")
    if (
        env.get("DATABASE_URL")
        and not database_url.startswith(("postgresql://", "postgres://"))
        and ("=" not in database_url)
    ):
        raise ConfigError(
            "DATABASE_URL must be a postgresql:// URL (or key=value connection string), got something else"
        )
    if problem := transaction_pooler_problem(env.get("DATABASE_URL")):
        raise ConfigError(problem)
    mode = env.get("DRUMBEAT_ENV") or "development"
    if mode not in ("development", "production"):
        raise ConfigError(f"DRUMBEAT_ENV must be development or production, got {mode!r}")
    transport = env.get("DRUMBEAT_TRANSPORT") or None
    if transport not in (None, "outbox"):
        raise ConfigError(f"DRUMBEAT_TRANSPORT may only be 'outbox' (or unset), got {transport!r}")
    twilio_base_url = env.get("DRUMBEAT_TWILIO_BASE_URL") or TWILIO_API
    if not twilio_base_url.startswith(("https://", "http://")):
        raise ConfigError("DRUMBEAT_TWILIO_BASE_URL must be an http(s) URL")
    sid = env.get("TWILIO_ACCOUNT_SID") or None
    if sid and (problem := account_sid_problem(sid, twilio_base_url)):
        raise ConfigError(problem)
    port = env.get("SMTP_PORT") or "587"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"SMTP_PORT must be a TCP port number, got {port!r}")
    public_url = (env.get("DRUMBEAT_PUBLIC_URL") or "").rstrip("/") or None
    if public_url and not public_url.startswith(("https://", "http://")):
        raise ConfigError("DRUMBEAT_PUBLIC_URL must start with https:// (or http:// for local testing)")
    # `drumbeat api` / `up` listen there unless told otherwise (their --host / --port move the default along).
    local_url = local_server_url(
        env.get("DRUMBEAT_HOST") or DEFAULT_HOST, _tcp_port("DRUMBEAT_PORT", DEFAULT_PORT)
    )
    secret_key = _configured_secret(mode)
    lease = env.get("DRUMBEAT_DELIVERY_LEASE") or str(Settings.delivery_lease_seconds)
    if not lease.isdigit() or int(lease) < 1:
        raise ConfigError(f"DRUMBEAT_DELIVERY_LEASE must be a whole number of seconds >= 1, got {lease!r}")
    region = (env.get("DRUMBEAT_DEFAULT_REGION") or "US").upper()
    if not (len(region) == 2 and region.isalpha()):
        raise ConfigError(
            f"DRUMBEAT_DEFAULT_REGION must be a two-letter country code such as US, got {region!r}"
        )
    jwks_url = env.get("DRUMBEAT_JWKS_URL") or None
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("DRUMBEAT_JWKS_URL must be an http(s) URL")
    jwt_secret = env.get("DRUMBEAT_JWT_SECRET") or None
    if jwt_secret is not None and len(jwt_secret) < 32:
        raise ConfigError("DRUMBEAT_JWT_SECRET must be at least 32 characters (HS256 needs a long secret)")
    send_concurrency = env.get("DRUMBEAT_SEND_CONCURRENCY") or "8"
    if not send_concurrency.isdigit() or not 1 <= int(send_concurrency) <= MAX_SEND_CONCURRENCY:
        raise ConfigError(
            f"DRUMBEAT_SEND_CONCURRENCY must be a whole number from 1 to {MAX_SEND_CONCURRENCY}, "
            f"got {send_concurrency!r}"
        )
    log_format = (env.get("DRUMBEAT_LOG_FORMAT") or "auto").lower()
    if log_format not in ("auto", "json", "text"):
        raise ConfigError(f"DRUMBEAT_LOG_FORMAT must be json, text or auto, got {log_format!r}")
    log_level = (env.get("DRUMBEAT_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"DRUMBEAT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    settings = Settings(
        database_url=database_url,
        env=mode,
        transport=transport,
        twilio_account_sid=sid,
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        twilio_base_url=twilio_base_url,
        smtp_host=env.get("SMTP_HOST") or None,
        smtp_port=int(port),
        smtp_username=env.get("SMTP_USERNAME") or None,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_starttls=_flag("SMTP_STARTTLS", True),
        public_url=public_url or (local_url if mode == "development" else None),
        public_url_defaulted=public_url is None and mode == "development",
        secret_key=secret_key,
        delivery_lease_seconds=int(lease),
        jwt_secret=jwt_secret.encode() if jwt_secret else None,
        jwks_url=jwks_url,
        jwt_audience=env.get("DRUMBEAT_JWT_AUDIENCE") or "authenticated",
        default_region=region,
        send_concurrency=int(send_concurrency),
        log_format=log_format,
        log_level=log_level,
        max_body_bytes=_whole_number("DRUMBEAT_MAX_BODY_BYTES", Settings.max_body_bytes, 1),
        rate_limit_per_second=_rate_per_second("DRUMBEAT_RATE_LIMIT", Settings.rate_limit_per_second),
        rate_limit_burst=_whole_number("DRUMBEAT_RATE_LIMIT_BURST", Settings.rate_limit_burst, 1),
        webhook_allow_private=_flag("DRUMBEAT_WEBHOOK_ALLOW_PRIVATE", False),
        webhook_concurrency=_whole_number("DRUMBEAT_WEBHOOK_CONCURRENCY", Settings.webhook_concurrency, 1),
    )
    if secret_key is not None:
        return settings
    # Made last, once everything else is valid: a configuration refused above leaves no file behind.
    return replace(settings, secret_key=development_secret_key(development_key_path()))


def _configured_secret(mode: str) -> bytes | None:
    """DRUMBEAT_SECRET_KEY, checked; None in development without it (a key is made then: load_settings)."""
    secret = os.environ.get("DRUMBEAT_SECRET_KEY") or None
    if secret is not None and len(secret) < 32:
        raise ConfigError("DRUMBEAT_SECRET_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
    if secret is None and mode == "production":
        raise ConfigError(
            "DRUMBEAT_SECRET_KEY is required in production: it signs unsubscribe and tracking links"
        )
    return secret.encode() if secret else None
