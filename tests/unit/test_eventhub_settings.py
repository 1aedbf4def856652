"""The Event Hubs source's configuration: options to settings, validation, secrets, start positions.

No service is needed here; the source against the real SDK is in tests/integration/test_eventhub*.py.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import pytest

from rmmwatch.config import ConfigError, RunConfig, add_run_options, resolve
from rmmwatch.logging import redactor
from rmmwatch.sources.eventhub import EventHubSource, start_position
from rmmwatch.wiring import eventhub_settings

NAMESPACE_STRING = "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=K3yK3yK3y="
STORAGE = (
    "DefaultEndpointsProtocol=https;AccountName=contosockpt;AccountKey=U3RvcmFnZUtleQ==;EndpointSuffix=core.windows.net"
)


def _config(argv: list[str], env: dict[str, str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return RunConfig.from_values(resolve(parser.parse_args(["--source", "eventhub", *argv]), env or {}))


def test_env_names_are_the_helm_charts() -> None:
    """The chart sets these variables; each lands in its option."""
    config = _config(
        [],
        {
            "RMMWATCH_EVENTHUB_CONNECTION_STRING": NAMESPACE_STRING,
            "RMMWATCH_EVENTHUB_NAME": "defender",
            "RMMWATCH_EVENTHUB_CONSUMER_GROUP": "rmmwatch",
            "RMMWATCH_EVENTHUB_START": "latest",
            "RMMWATCH_EVENTHUB_LOAD_BALANCING": "balanced",
            "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING": STORAGE,
            "RMMWATCH_EVENTHUB_CHECKPOINT_CONTAINER": "ckpt",
        },
    )
    settings = eventhub_settings(config)
    assert (settings.namespace, settings.hub, settings.consumer_group) == (
        "contoso.servicebus.windows.net",
        "defender",
        "rmmwatch",
    )
    assert (settings.start, settings.load_balancing, settings.checkpoint_container) == ("latest", "balanced", "ckpt")
    assert (settings.load_balancing_interval_s, settings.ownership_expiry_s) == (30.0, 180.0)
    assert "K3yK3y" not in repr(settings) and "U3RvcmFnZUtleQ" not in repr(settings)


def test_the_hub_comes_from_entity_path_or_the_name() -> None:
    """A hub-level string names the hub; a namespace-level one needs --eventhub-name; they must agree."""
    hub_level = NAMESPACE_STRING + ";EntityPath=defender"
    assert eventhub_settings(_config(["--eventhub-connection-string", hub_level])).hub == "defender"
    named = ["--eventhub-connection-string", hub_level, "--eventhub-name", "defender"]
    assert eventhub_settings(_config(named)).hub == "defender"
    with pytest.raises(ConfigError, match="needs --eventhub-name"):
        eventhub_settings(_config(["--eventhub-connection-string", NAMESPACE_STRING]))
    with pytest.raises(ConfigError, match="differs from the connection string's EntityPath"):
        eventhub_settings(_config(["--eventhub-connection-string", hub_level, "--eventhub-name", "other"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs --eventhub-connection-string or --eventhub-fully-qualified-namespace"),
        (["--eventhub-connection-string", NAMESPACE_STRING, "--eventhub-fully-qualified-namespace", "x"], "not both"),
        (
            [
                "--eventhub-fully-qualified-namespace",
                "ns.servicebus.windows.net",
                "--eventhub-name",
                "h",
                "--eventhub-checkpoint-connection-string",
                STORAGE,
                "--eventhub-checkpoint-account-url",
                "https://a",
            ],
            "not both",
        ),
        (
            [
                "--eventhub-connection-string",
                "Endpoint=sb://x/;SharedAccessKey=abcdefgh",
                "--eventhub-name",
                "h",
                "--eventhub-start",
                "yesterday",
            ],
            "--eventhub-start: use earliest, latest or an ISO 8601 time",
        ),
        (
            ["--eventhub-fully-qualified-namespace", "ns", "--eventhub-name", "h", "--eventhub-ownership-expiry", "30"],
            "must be longer than --eventhub-load-balancing-interval",
        ),
        (["--eventhub-connection-string", "SharedAccessKey=abcdefgh"], "no Endpoint=sb://"),
    ],
)
def test_bad_settings_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        eventhub_settings(_config(argv))


def test_checkpoint_account_key_is_never_printed() -> None:
    """The storage key and the Event Hubs key are registered with the log redactor."""
    eventhub_settings(
        _config(
            ["--eventhub-name", "h"],
            {
                "RMMWATCH_EVENTHUB_CONNECTION_STRING": NAMESPACE_STRING,
                "RMMWATCH_EVENTHUB_CHECKPOINT_CONNECTION_STRING": STORAGE,
            },
        )
    )
    assert redactor.redact("key U3RvcmFnZUtleQ== and K3yK3yK3y=") == "key *** and ***"


def test_start_positions_are_explicit() -> None:
    """earliest is offset -1 (never the SDK's @latest default), latest is @latest, a time is an aware datetime."""
    assert start_position("earliest") == "-1"
    assert start_position("latest") == "@latest"
    assert start_position("2026-11-20T12:00:00.5Z") == datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=UTC)
    assert start_position("2026-11-20T13:00:00+01:00") == datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_entra_without_the_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--eventhub-fully-qualified-namespace without azure-identity: say which extra to install."""
    settings = eventhub_settings(
        _config(["--eventhub-fully-qualified-namespace", "ns.servicebus.windows.net", "--eventhub-name", "h"])
    )
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)
    with pytest.raises(ConfigError, match=r"rmmwatch\[entra\]"):
        EventHubSource(settings)
