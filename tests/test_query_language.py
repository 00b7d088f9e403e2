"""An explicit query language (`cjkrag query --language`, the service's `language` field) overrides detection;
anything but a supported code is refused with an error naming the option."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from cjkrag import cli
from cjkrag.errors import InputError
from cjkrag.pipeline.analyzer import CJKAnalyzer
from cjkrag.pipeline.analyzer.normalize import query_language
from cjkrag.service.schemas import SearchRequest


@pytest.mark.parametrize(("given", "code"), [("ja", "ja"), ("ja-JP", "ja"), ("zh_TW", "zh"), ("KO", "ko"),
                                             ("jpn", "ja"), ("en", "en"), ("auto", None), (None, None)])  # fmt: skip
def test_supported_codes_fold(given: str | None, code: str | None) -> None:
    assert query_language(given) == code


@pytest.mark.parametrize("given", ["fr", "de-CH", "japanese!", "", "x", 3])
def test_unsupported_or_malformed_codes_are_refused(given: object) -> None:
    with pytest.raises(InputError, match="--language"):
        query_language(given, field="--language")


def test_the_override_changes_the_analysis() -> None:
    analyzer = CJKAnalyzer()
    detected = analyzer.analyze_query("東京大学")  # Han only: read as Chinese (and Japanese) by detection
    assert analyzer.analyze_query("東京大学", "ja") != detected


class _Engine:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def search(self, query: str, **kwargs: Any) -> list[Any]:
        self.kwargs = kwargs
        return []


def test_cli_passes_the_language_to_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _Engine()
    monkeypatch.setattr(cli, "_engine", lambda *a, **k: engine)
    result = CliRunner().invoke(cli.app, ["query", "東京", "--language", "ja-JP"])
    assert result.exit_code == 0, result.output
    assert engine.kwargs["language"] == "ja"
    result = CliRunner().invoke(cli.app, ["query", "東京"])
    assert result.exit_code == 0 and engine.kwargs["language"] is None


def test_cli_refuses_an_unsupported_language_before_opening_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_engine(*a: Any, **k: Any) -> Any:
        raise AssertionError("the engine must not be opened for a bad --language")

    monkeypatch.setattr(cli, "_engine", no_engine)
    result = CliRunner().invoke(cli.app, ["query", "東京", "--language", "fr"])
    assert result.exit_code != 0
    assert "--language='fr' is not a supported language" in result.output


def test_service_body_validates_the_language() -> None:
    assert SearchRequest(query="q", language="ko-KR").language == "ko"
    assert SearchRequest(query="q").language is None
    with pytest.raises(ValueError, match="not a supported language"):
        SearchRequest(query="q", language="fr")
