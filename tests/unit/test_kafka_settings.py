"""Kafka connection settings: one KafkaSettings, rendered for aiokafka and for librdkafka alike."""

from __future__ import annotations

import pytest

from rmmwatch.config import ConfigError, RunConfig
from rmmwatch.kafka_settings import EVENTHUBS_USERNAME, KafkaSettings
from rmmwatch.wiring import kafka_settings as settings_from_config

CONNECTION = (
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=listen;"
    "SharedAccessKey=c2VjcmV0LWtleS1ub3QtcmVhbA==;EntityPath=defender"
)


def test_the_event_hubs_preset_maps_to_librdkafka_properties() -> None:
    settings = settings_from_config(RunConfig(source="kafka", eventhubs_connection_string=CONNECTION))
    config = settings.librdkafka_config()
    assert config["bootstrap.servers"] == "contoso.servicebus.windows.net:9093"
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["sasl.username"] == EVENTHUBS_USERNAME
    assert config["sasl.password"] == CONNECTION
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert config["metadata.max.age.ms"] == 180_000
    assert config["socket.timeout.ms"] == 60_000
    assert config["connections.max.idle.ms"] == 180_000
    assert settings.default_topic == "defender"


def test_tls_files_and_hostname_check_map_to_librdkafka() -> None:
    settings = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SSL",
        ssl_ca_file="/ca.pem",
        ssl_cert_file="/cert.pem",
        ssl_key_file="/key.pem",
        ssl_check_hostname=False,
    )
    config = settings.librdkafka_config()
    assert config["security.protocol"] == "ssl"
    assert (config["ssl.ca.location"], config["ssl.certificate.location"], config["ssl.key.location"]) == (
        "/ca.pem",
        "/cert.pem",
        "/key.pem",
    )
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert not any(key.startswith("sasl.") for key in config)


def test_plaintext_has_no_tls_or_sasl_properties() -> None:
    config = KafkaSettings(bootstrap_servers="b:9092").librdkafka_config()
    assert config["security.protocol"] == "plaintext"
    assert not any(key.startswith(("ssl.", "sasl.")) for key in config)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_without_credentials_is_refused(mechanism: str) -> None:
    settings = KafkaSettings(bootstrap_servers="b:9092", security_protocol="SASL_SSL", sasl_mechanism=mechanism)
    with pytest.raises(ConfigError, match="needs --kafka-sasl-username and --kafka-sasl-password"):
        settings.librdkafka_config()


def test_oauthbearer_points_to_the_aiokafka_client() -> None:
    settings = KafkaSettings(
        bootstrap_servers="b:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        oauth_token_provider="mod:factory",
    )
    with pytest.raises(ConfigError, match="--kafka-client aiokafka"):
        settings.librdkafka_config()


def test_the_confluent_source_refuses_unsupported_settings_before_starting() -> None:
    from rmmwatch.sources.kafka_confluent import ConfluentKafkaSource

    settings = KafkaSettings(
        bootstrap_servers="b:9092", security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER"
    )
    with pytest.raises(ConfigError):
        ConfluentKafkaSource(settings, ["t"], group_id="g")


def test_settings_repr_hides_the_password() -> None:
    settings = settings_from_config(RunConfig(source="kafka", eventhubs_connection_string=CONNECTION))
    assert "c2VjcmV0" not in repr(settings)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("kafka_security_protocol", "SASL_PLAINTEXT"),
        ("kafka_sasl_mechanism", "SCRAM-SHA-512"),
        ("kafka_sasl_username", "alice"),
        ("kafka_sasl_password", "hunter2-not-shown"),
        ("kafka_oauth_token_provider", "tokens:provider"),
        ("kafka_ssl_cert_file", "/client.pem"),
        ("kafka_ssl_key_file", "/client.key"),
    ],
)
def test_an_option_the_event_hubs_preset_overrides_is_refused_not_ignored(option: str, value: str) -> None:
    """The preset decides these; given with another value they used to be dropped without a word."""
    config = RunConfig(source="kafka", eventhubs_connection_string=CONNECTION, **{option: value})
    with pytest.raises(ConfigError) as caught:
        settings_from_config(config)
    message = str(caught.value)
    assert "--" + option.replace("_", "-") in message and "--eventhubs-connection-string" in message
    assert "hunter2" not in message and "c2VjcmV0" not in message


def test_what_agrees_with_the_event_hubs_preset_is_accepted_and_a_session_timeout_is_kept() -> None:
    config = RunConfig(
        source="kafka",
        eventhubs_connection_string=CONNECTION,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username=EVENTHUBS_USERNAME,
        kafka_session_timeout_ms=45_000,
    )
    settings = settings_from_config(config)
    assert (settings.security_protocol, settings.session_timeout_ms) == ("SASL_SSL", 45_000)
    default = settings_from_config(RunConfig(source="kafka", eventhubs_connection_string=CONNECTION))
    assert default.session_timeout_ms == 30_000
