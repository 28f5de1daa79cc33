import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.core.settings import ConfigError, development_secret_key, load_settings

BASE = {"DATABASE_URL": "postgresql://x@localhost/db"}


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """Sets exactly these variables (and DATABASE_URL); the data directory is the test's own."""

    def set_environment(**values):
        monkeypatch.setenv("DRUMBEAT_DATA_DIR", str(tmp_path / "data"))
        for name in [
            "DRUMBEAT_HOST",
            "DRUMBEAT_PORT",
            "DATABASE_URL",
            "DRUMBEAT_ENV",
            "DRUMBEAT_TRANSPORT",
            "TWILIO_ACCOUNT_SID",
            "SMTP_PORT",
            "SMTP_STARTTLS",
            "DRUMBEAT_PUBLIC_URL",
            "DRUMBEAT_SECRET_KEY",
            "DRUMBEAT_TWILIO_BASE_URL",
            "DRUMBEAT_DELIVERY_LEASE",
            "DRUMBEAT_LOG_LEVEL",
            "DRUMBEAT_SEND_CONCURRENCY",
            "DRUMBEAT_MAX_BODY_BYTES",
            "DRUMBEAT_RATE_LIMIT",
            "DRUMBEAT_RATE_LIMIT_BURST",
        ]:
            monkeypatch.delenv(name, raising=False)
        for name, value in (BASE | values).items():
            monkeypatch.setenv(name, value)

    return set_environment


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DRUMBEAT_ENV": "staging"}, "DRUMBEAT_ENV"),
        ({"DRUMBEAT_TRANSPORT": "carrier-pigeon"}, "DRUMBEAT_TRANSPORT"),
        ({"TWILIO_ACCOUNT_SID": "nope"}, "TWILIO_ACCOUNT_SID"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
        ({"DRUMBEAT_PUBLIC_URL": "drumbeat.example"}, "DRUMBEAT_PUBLIC_URL"),
        ({"DRUMBEAT_SECRET_KEY": "short"}, "DRUMBEAT_SECRET_KEY"),
        ({"DRUMBEAT_SEND_CONCURRENCY": "0"}, "DRUMBEAT_SEND_CONCURRENCY"),
        ({"DRUMBEAT_SEND_CONCURRENCY": "65"}, "DRUMBEAT_SEND_CONCURRENCY"),
        ({"DRUMBEAT_SEND_CONCURRENCY": "eight"}, "DRUMBEAT_SEND_CONCURRENCY"),
        ({"DRUMBEAT_ENV": "production"}, "DRUMBEAT_SECRET_KEY"),
        ({"DRUMBEAT_MAX_BODY_BYTES": "0"}, "DRUMBEAT_MAX_BODY_BYTES"),
        ({"DRUMBEAT_MAX_BODY_BYTES": "1MB"}, "DRUMBEAT_MAX_BODY_BYTES"),
        ({"DRUMBEAT_RATE_LIMIT": "fast"}, "DRUMBEAT_RATE_LIMIT"),
        ({"DRUMBEAT_RATE_LIMIT": "-1"}, "DRUMBEAT_RATE_LIMIT"),
        ({"DRUMBEAT_RATE_LIMIT": "100/h"}, "DRUMBEAT_RATE_LIMIT"),
        ({"DRUMBEAT_RATE_LIMIT": "inf"}, "DRUMBEAT_RATE_LIMIT"),
        ({"DRUMBEAT_RATE_LIMIT_BURST": "0"}, "DRUMBEAT_RATE_LIMIT_BURST"),
        ({"DRUMBEAT_RATE_LIMIT_BURST": "2.5"}, "DRUMBEAT_RATE_LIMIT_BURST"),
        ({"DRUMBEAT_PORT": "eighty"}, "DRUMBEAT_PORT"),
        ({"DRUMBEAT_PORT": "70000"}, "DRUMBEAT_PORT"),
        (
            {
                "DATABASE_URL": "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"
            },
            "DATABASE_URL",
        ),
    ],
)
def test_bad_configuration_names_the_variable(environment, values, named):
    environment(**values)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_good_configuration_and_no_secret_in_repr(environment):
    environment(TWILIO_ACCOUNT_SID="AC" + "1" * 32, DRUMBEAT_SECRET_KEY="s" * 40, SMTP_STARTTLS="false")
    settings = load_settings()
    assert settings.has_credentials("sms") is False  # no auth token
    assert settings.smtp_starttls is False and settings.secret_key == b"s" * 40
    assert "s" * 40 not in repr(settings)


def test_a_compatible_provider_may_name_its_account_by_project_id(environment):
    """SignalWire's Twilio-compatible API: a UUID project id instead of AC…, only with its base URL."""
    project = "0b9c0f4e-5d1c-4b8e-9a43-6f1f4d2b7c10"
    environment(TWILIO_ACCOUNT_SID=project, DRUMBEAT_TWILIO_BASE_URL="https://example.signalwire.com")
    assert load_settings().twilio_account_sid == project
    environment(TWILIO_ACCOUNT_SID=project)  # against Twilio itself it cannot be right
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        load_settings()


def test_an_empty_variable_means_unset(environment):
    """`VAR=` in a .env file or compose's environment is the default, for every variable alike."""
    environment(DRUMBEAT_ENV="", SMTP_PORT="", DRUMBEAT_DELIVERY_LEASE="", DRUMBEAT_LOG_LEVEL="")
    settings = load_settings()
    assert (settings.env, settings.smtp_port, settings.delivery_lease_seconds) == ("development", 587, 120)


def test_the_body_limit_defaults_to_1_mib(environment):
    environment()
    assert load_settings().max_body_bytes == 1_048_576
    environment(DRUMBEAT_MAX_BODY_BYTES="2048")
    assert load_settings().max_body_bytes == 2048


def test_the_rate_limit_defaults_to_50_a_second_in_bursts_of_100(environment):
    environment()
    settings = load_settings()
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (50, 100)


@pytest.mark.parametrize(
    ("written", "per_second"),
    [("20", 20), ("20/s", 20), ("600/min", 10), ("0.5", 0.5), ("0", 0), (" 7 / S ", 7)],
)
def test_the_rate_limit_is_read_per_second_or_per_minute(environment, written, per_second):
    environment(DRUMBEAT_RATE_LIMIT=written, DRUMBEAT_RATE_LIMIT_BURST="5")
    settings = load_settings()
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (per_second, 5)


def test_development_makes_a_secret_key_once_and_keeps_it_private_in_the_data_directory(
    environment, tmp_path
):
    environment()
    first = load_settings().secret_key
    kept = tmp_path / "data" / "secret_key"
    assert first is not None and len(first) >= 32 and kept.read_bytes().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert load_settings().secret_key == first  # the next load (the worker, the next run) reuses it
    assert [path.name for path in kept.parent.iterdir()] == ["secret_key"]  # no draft left behind


def test_a_configured_secret_key_wins_and_no_file_is_made(environment, tmp_path):
    environment(DRUMBEAT_SECRET_KEY="k" * 40)
    assert load_settings().secret_key == b"k" * 40
    assert not (tmp_path / "data").exists()


def test_production_still_requires_the_secret_key_and_never_makes_one(environment, tmp_path):
    environment(DRUMBEAT_ENV="production")
    with pytest.raises(ConfigError, match="DRUMBEAT_SECRET_KEY is required in production"):
        load_settings()
    assert not (tmp_path / "data").exists()


def test_a_refused_configuration_leaves_no_key_behind(environment, tmp_path):
    environment(DRUMBEAT_LOG_LEVEL="LOUD")
    with pytest.raises(ConfigError, match="DRUMBEAT_LOG_LEVEL"):
        load_settings()
    assert not (tmp_path / "data").exists()


def test_an_unusable_kept_key_is_an_error_naming_the_file(environment, tmp_path):
    environment()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret_key").write_text("short\n")
    with pytest.raises(ConfigError, match=r"data/secret_key .*fewer than 32 characters"):
        load_settings()


def test_a_data_directory_that_cannot_hold_the_key_is_an_error_saying_what_to_set(environment, tmp_path):
    environment()
    (tmp_path / "data").write_text("a file where the directory should be")
    with pytest.raises(ConfigError, match="set DRUMBEAT_SECRET_KEY, or DRUMBEAT_DATA_DIR"):
        load_settings()


def test_the_public_url_defaults_to_the_local_server_in_development_only(environment):
    environment()
    settings = load_settings()
    assert (settings.public_url, settings.public_url_defaulted) == ("http://127.0.0.1:8000", True)
    environment(DRUMBEAT_HOST="0.0.0.0", DRUMBEAT_PORT="9000")
    assert load_settings().public_url == "http://127.0.0.1:9000"  # listening everywhere: reached locally
    environment(DRUMBEAT_PUBLIC_URL="https://drumbeat.example.com/")
    settings = load_settings()
    assert (settings.public_url, settings.public_url_defaulted) == ("https://drumbeat.example.com", False)
    environment(DRUMBEAT_ENV="production", DRUMBEAT_SECRET_KEY="k" * 40)
    settings = load_settings()
    assert (settings.public_url, settings.public_url_defaulted) == (None, False)


def test_processes_starting_together_agree_on_one_key(tmp_path):
    """The API and the worker of `drumbeat up`, or two commands started at once: one key wins for all."""
    path = tmp_path / "secret_key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: development_secret_key(path), range(32)))
    assert keys == {path.read_bytes().strip()}
