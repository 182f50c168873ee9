"""The dead-letter stream with a real nats-server: bounds, headers, truncation, the CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest

from pulsar_core import dead_letters
from pulsar_core.dead_letters import (
    MAX_PAYLOAD_BYTES,
    DeadLetterBounds,
    dead_letter,
    ensure_dead_letter_stream,
    list_dead_letters,
)
from pulsar_core.dead_letters_cli import main
from pulsar_core.events import DEAD_LETTER_STREAM
from tests.support.services import NatsServer, free_port


async def _with_js(url: str) -> tuple[Any, Any]:
    client = await nats.connect(url)
    return client, client.jetstream()


async def test_only_the_newest_are_kept_within_the_bound(nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    assert await ensure_dead_letter_stream(js, DeadLetterBounds(max_msgs=5))
    for i in range(12):
        await dead_letter(js, source="bridge", subject="pulsar.signals.tehran.eco",
                          payload=f"row {i}".encode(), reason=f"bad row {i}")
    info = await js.stream_info(DEAD_LETTER_STREAM)
    listed = await list_dead_letters(js, limit=50)
    await client.close()
    assert info.state.messages == 5
    assert [letter.payload for letter in listed] == [f"row {i}".encode() for i in range(7, 12)]


async def test_the_default_stream_is_bounded_in_count_bytes_age_and_per_source(
        nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    assert await ensure_dead_letter_stream(js)
    config = (await js.stream_info(DEAD_LETTER_STREAM)).config
    await client.close()
    assert config.max_msgs > 0 and config.max_bytes > 0 and config.max_age > 0
    assert 0 < config.max_msgs_per_subject < config.max_msgs
    assert str(config.discard) in {"old", "DiscardPolicy.OLD"}
    assert str(config.storage) in {"file", "StorageType.FILE"}


async def test_reason_subject_source_and_time_round_trip(nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    await ensure_dead_letter_stream(js)
    await dead_letter(js, source="operator", subject="pulsar.retrain.tehran.eco",
                      payload=b"not json", reason="invalid JSON: expected value")
    await dead_letter(js, source="bridge", subject="pulsar.signals.tehran.eco",
                      payload=b'{"hex_id": 1}', reason="missing column: city_id")
    everything = await list_dead_letters(js, limit=10)
    operator_only = await list_dead_letters(js, limit=10, source="operator")
    await client.close()
    assert [(d.source, d.subject, d.reason) for d in everything] == [
        ("operator", "pulsar.retrain.tehran.eco", "invalid JSON: expected value"),
        ("bridge", "pulsar.signals.tehran.eco", "missing column: city_id")]
    assert [d.payload for d in operator_only] == [b"not json"]
    assert everything[0].time <= everything[1].time and everything[0].time.tzinfo is not None
    assert everything[0].size == len(b"not json") and not everything[0].truncated


async def test_the_newest_of_one_source_are_found_behind_another_sources_flood(
        nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    await ensure_dead_letter_stream(js)
    for i in range(3):
        await dead_letter(js, source="operator", subject="s", payload=b"op%d" % i, reason="r")
    for i in range(300):
        await dead_letter(js, source="bridge", subject="s", payload=b"b%d" % i, reason="r")
    listed = await list_dead_letters(js, limit=2, source="operator")
    await client.close()
    assert [d.payload for d in listed] == [b"op1", b"op2"]


async def test_a_huge_payload_is_truncated_and_says_so(nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    await ensure_dead_letter_stream(js)
    huge = b"x" * (10 * MAX_PAYLOAD_BYTES)
    await dead_letter(js, source="bridge", subject="pulsar.signals.a.b", payload=huge,
                      reason="too big")
    [letter] = await list_dead_letters(js, limit=1)
    await client.close()
    assert letter.payload == huge[:MAX_PAYLOAD_BYTES]
    assert letter.truncated and letter.size == len(huge)


async def test_newlines_in_reason_subject_and_source_cannot_inject_headers(
        nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    await ensure_dead_letter_stream(js)
    await dead_letter(js, source="bri\r\ndge.x", subject="a\r\nPulsar-Source: forged",
                      payload=b"p",
                      reason="bad\r\nPulsar-Reason: forged\nNats-Msg-Id: 1" + "y" * 5000)
    [letter] = await list_dead_letters(js, limit=1)
    raw = await js.get_msg(DEAD_LETTER_STREAM, seq=letter.sequence)
    await client.close()
    assert letter.source == "bri_dge_x"
    assert letter.reason.startswith("bad Pulsar-Reason: forged Nats-Msg-Id: 1")
    assert len(letter.reason) <= dead_letters.MAX_REASON_CHARS
    assert letter.subject == "a Pulsar-Source: forged"
    assert set(raw.headers or {}) == {"Pulsar-Reason", "Pulsar-Source", "Pulsar-Subject",
                                      "Pulsar-Time", "Pulsar-Size", "Pulsar-Truncated"}
    assert all("\n" not in str(v) and "\r" not in str(v) for v in (raw.headers or {}).values())


async def test_a_missing_stream_is_created_on_the_first_dead_letter(
        nats_server: NatsServer) -> None:
    client, js = await _with_js(nats_server.url)
    await dead_letter(js, source="operator", subject="s", payload=b"p", reason="r")
    listed = await list_dead_letters(js, limit=5)
    await client.close()
    assert [d.payload for d in listed] == [b"p"]


async def test_nats_down_is_logged_and_counted_never_raised(
        nats_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    client, js = await _with_js(nats_server.url)
    await ensure_dead_letter_stream(js)
    before = dead_letters.counts().get(("downtest", "failed"), 0)
    nats_server.stop()
    await dead_letter(js, source="downtest", subject="s", payload=b"p", reason="r")
    await client.close()
    assert dead_letters.counts()[("downtest", "failed")] == before + 1
    assert "LOST" in caplog.text


def test_metrics_expose_published_and_failed_counts(nats_server: NatsServer) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    async def publish() -> None:
        client, js = await _with_js(nats_server.url)
        await dead_letter(js, source="metricstest", subject="s", payload=b"p", reason="r")
        await client.close()

    asyncio.run(publish())
    registry = CollectorRegistry()
    dead_letters.register_metrics(registry)
    text = generate_latest(registry).decode()
    assert 'pulsar_dead_letters_total{outcome="published",source="metricstest"} 1.0' in text


def test_cli_lists_them_as_a_table_and_as_json(
        nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    async def publish() -> None:
        client, js = await _with_js(nats_server.url)
        await dead_letter(js, source="operator", subject="pulsar.retrain.tehran.eco",
                          payload=b'{"reason": 7}', reason="reason: Input should be a string")
        await dead_letter(js, source="bridge", subject="pulsar.signals.tehran.eco",
                          payload=b"\xff\xfe binary", reason="unknown city_id 9")
        await client.close()

    asyncio.run(publish())
    assert main(["--nats-url", nats_server.url]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split() == ["TIME", "SOURCE", "SUBJECT", "REASON", "PAYLOAD"]
    assert "operator" in lines[1] and "reason: Input should be a string" in lines[1]
    assert '{"reason": 7}' in lines[1] and "unknown city_id 9" in lines[2]
    assert main(["--nats-url", nats_server.url, "--source", "bridge", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["source"] == "bridge" and entry["subject"] == "pulsar.signals.tehran.eco"
    assert entry["reason"] == "unknown city_id 9" and entry["size"] == 9
    assert entry["payload_base64"] == "//4gYmluYXJ5"


def test_cli_says_so_when_there_are_none(
        nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nats-url", nats_server.url, "--limit", "3"]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"


def test_cli_exits_3_with_one_line_and_no_password_when_nats_is_down(
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://pulsar:s3cret-pass@127.0.0.1:{free_port()}"
    assert main(["--nats-url", url, "--timeout", "2"]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "s3cret-pass" not in err and "pulsar:***@127.0.0.1" in err


def test_cli_rejects_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--limit", "0"])
    assert exit_.value.code == 2 and "--limit" in capsys.readouterr().err
