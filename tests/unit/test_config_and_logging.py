"""Configuration precedence and validation, the README's option reference, and secret redaction."""

from __future__ import annotations

import argparse
import importlib.util
import io
from pathlib import Path

import orjson
import pytest

from rmmwatch.config import RUN_OPTIONS, ConfigError, RunConfig, add_run_options, resolve
from rmmwatch.logging import RateLimiter, Redactor, configure, get_logger, redactor

README = Path(__file__).resolve().parents[2] / "README.md"


def _resolve(argv: list[str], env: dict[str, str]) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return RunConfig.from_values(resolve(parser.parse_args(argv), env))


def test_command_line_beats_environment_beats_default() -> None:
    """--flag, then RMMWATCH_FLAG, then the default."""
    assert _resolve([], {}).metrics_port == 9464
    assert _resolve([], {"RMMWATCH_METRICS_PORT": "9000"}).metrics_port == 9000
    assert _resolve(["--metrics-port", "9100"], {"RMMWATCH_METRICS_PORT": "9000"}).metrics_port == 9100


def test_repeatable_options_take_comma_separated_env() -> None:
    """RMMWATCH_SINK=a,b is two sinks, like --sink a --sink b."""
    assert _resolve([], {"RMMWATCH_SINK": "stdout, jsonl:/tmp/a.jsonl"}).sinks == ["stdout", "jsonl:/tmp/a.jsonl"]
    assert _resolve(["--sink", "stdout", "--sink", "jsonl:x"], {}).sinks == ["stdout", "jsonl:x"]
    assert _resolve([], {}).sinks == ["stdout"]


def test_switches_read_booleans_from_env() -> None:
    """RMMWATCH_NO_EXCLUSIONS=true is the switch; 'false' is not."""
    assert _resolve([], {"RMMWATCH_NO_EXCLUSIONS": "true"}).no_exclusions is True
    assert _resolve([], {"RMMWATCH_NO_EXCLUSIONS": "false"}).no_exclusions is False
    assert _resolve(["--no-exclusions"], {}).no_exclusions is True


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        pytest.param(["--metrics-port", "http"], {}, "--metrics-port: cannot use 'http'", id="not a number"),
        pytest.param([], {"RMMWATCH_TICK_INTERVAL": "soon"}, "RMMWATCH_TICK_INTERVAL", id="bad env value named"),
        pytest.param(["--tick-interval", "0"], {}, "--tick-interval must be positive", id="out of range"),
        pytest.param(["--log-level", "loud"], {}, "debug", id="not a choice"),
        pytest.param([], {"RMMWATCH_LOG_LEVEL": "loud"}, "must be one of", id="env not a choice"),
    ],
)
def test_bad_values_are_named(argv: list[str], env: dict[str, str], message: str) -> None:
    """A bad value fails with the option (or env var) that carried it."""
    with pytest.raises((ConfigError, SystemExit)) as error:
        _resolve(argv, env)
    if isinstance(error.value, ConfigError):
        assert message in str(error.value)


def test_readme_documents_every_run_option() -> None:
    """Each option and its environment variable appear in the README's reference table."""
    text = README.read_text()
    for option in RUN_OPTIONS:
        assert f"`{option.flag}`" in text, option.flag
        assert f"`{option.env}`" in text, option.env


def test_readme_option_table_is_the_generated_one() -> None:
    """The README's reference table is exactly what scripts/options_table.py makes of RUN_OPTIONS (help texts
    and defaults included): run ``python scripts/options_table.py --write`` after changing an option."""
    spec = importlib.util.spec_from_file_location("options_table", README.parent / "scripts" / "options_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.readme_table(README.read_text()) == module.table()


def test_store_url_defaults_to_the_data_dir() -> None:
    """--store sqlite means <data-dir>/rmmwatch.db."""
    config = _resolve(["--data-dir", "/var/lib/rmmwatch"], {})
    assert config.store_url() == "sqlite:/var/lib/rmmwatch/rmmwatch.db"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=abcDEF123+/=;EntityPath=h",
            "abcDEF123+/=",
            id="Event Hubs connection string",
        ),
        pytest.param("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9vYmFy==;", "Zm9vYmFy==", id="storage"),
        pytest.param("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig", id="bearer token"),
        pytest.param("redis://default:hunter2pass@redis:6379/0", "hunter2pass", id="password in a URL"),
        pytest.param("https://x.blob.core.windows.net/c?sv=2024&sig=abc%2Bdef%3D", "abc%2Bdef%3D", id="SAS sig"),
        pytest.param("sasl password=p4ssw0rd!", "p4ssw0rd!", id="password=..."),
    ],
)
def test_secret_patterns_are_redacted(text: str, secret: str) -> None:
    """Secret-looking values never survive redaction, the rest of the text does."""
    redacted = Redactor().redact(text)
    assert secret not in redacted
    assert "***" in redacted


def test_registered_secrets_are_redacted_from_structured_logs() -> None:
    """A registered secret is removed from every field of a JSON log line, nested ones included."""
    stream = io.StringIO()
    configure("info", "json", stream)
    redactor.register("plain-secret-value-42")
    get_logger("test").warning(
        "boom", error="failed with plain-secret-value-42", nested={"x": ["plain-secret-value-42"]}
    )
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert "plain-secret-value-42" not in stream.getvalue()
    assert line["event"] == "boom"
    assert line["nested"] == {"x": ["***"]}


def test_rate_limiter_counts_what_it_suppresses() -> None:
    """After the burst, calls are refused and counted; the count is reported with the next allowed one."""
    limiter = RateLimiter(per_second=0.0, burst=2)
    results = [limiter.allow("k") for _ in range(5)]
    assert [allowed for allowed, _ in results] == [True, True, False, False, False]
    assert results[-1] == (False, 3)
    assert limiter.allow("other") == (True, 0)


def test_run_config_defaults_match_the_option_table() -> None:
    """RunConfig's field defaults and RUN_OPTIONS' defaults are one truth (the table drives --help)."""
    defaults = RunConfig()
    for option in RUN_OPTIONS:
        expected = [] if option.repeat and option.default is None else option.default
        assert getattr(defaults, option.dest) == expected, option.flag
