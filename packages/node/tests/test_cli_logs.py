"""``configure_logging``: the two formats, the bound node name, levels, and stdlib routing."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from parakoon_node.runtime.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures the process-wide logging; put everything back afterwards."""
    monkeypatch.delenv("PARAKOON_LOG_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_one_object_per_line_with_node_level_and_timestamp() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", "node_1", stream=stream)
    log = get_logger("parakoon_node.test")
    log.info("became master", slot=42, lease_period_secs=2.0)
    log.warning("peer disconnected", peer="node_2")
    lines = json_lines(stream)
    assert len(lines) == 2
    first = lines[0]
    assert list(first)[:4] == ["timestamp", "level", "node", "event"]
    assert first["event"] == "became master"
    assert (first["level"], first["node"], first["slot"]) == ("info", "node_1", 42)
    assert first["lease_period_secs"] == 2.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["timestamp"]))
    assert (lines[1]["level"], lines[1]["peer"]) == ("warning", "node_2")


def test_level_filters() -> None:
    stream = io.StringIO()
    configure_logging("json", "warning", "n", stream=stream)
    log = get_logger()
    log.debug("no")
    log.info("no")
    log.warning("yes")
    log.error("yes too")
    assert [line["event"] for line in json_lines(stream)] == ["yes", "yes too"]


def test_stdlib_logging_goes_through_the_same_renderer() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", "node_0", stream=stream)
    logging.getLogger("some.library").warning("disk %s is slow", "sda")
    logging.getLogger("some.library").debug("filtered out")
    [line] = json_lines(stream)
    assert line["event"] == "disk sda is slow"
    assert (line["level"], line["node"], line["logger"]) == ("warning", "node_0", "some.library")


def test_exceptions_are_rendered_inside_the_json_line() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", None, stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("step failed", slot=7)
    [line] = json_lines(stream)
    assert line["event"] == "step failed"
    assert "node" not in line
    assert "ValueError: boom" in str(line["exception"])


def test_pretty_has_no_colors_off_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("pretty", "info", "node_2", stream=stream)
    get_logger().info("catch-up done", from_slot=10, to_slot=20)
    text = stream.getvalue()
    assert "\x1b[" not in text
    assert "catch-up done" in text
    assert "node=node_2" in text
    assert "from_slot=10" in text
    assert "to_slot=20" in text
    assert text.count("\n") == 1


def test_pretty_colors_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAKOON_LOG_COLOR", "1")
    stream = io.StringIO()
    configure_logging("pretty", "info", "node_2", stream=stream)
    get_logger().info("hello")
    assert "\x1b[" in stream.getvalue()


def test_configuring_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", "a", stream=first)
    configure_logging("json", "info", "b", stream=second)
    get_logger().info("once")
    assert first.getvalue() == ""
    assert [line["node"] for line in json_lines(second)] == ["b"]


def test_bad_format_or_level() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("xml", "info", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("json", "loud", None)
