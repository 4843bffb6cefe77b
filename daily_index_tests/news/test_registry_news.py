"""Feeds listed in the registry (`news: {feeds: [...]}`), validated with file and field."""

from pathlib import Path

import pytest

from daily_index.defs.news import news_from_env
from daily_index.registry import RegistryError, load_registry, registry_path


def registry_with(tmp_path: Path, news: str) -> Path:
    path = tmp_path / "kpis.yaml"
    path.write_text(news + registry_path().read_text(encoding="utf-8"), encoding="utf-8")
    return path


def test_registry_feeds_come_after_the_variables(tmp_path):
    path = registry_with(
        tmp_path, "news:\n  feeds:\n    - https://news.test/rss\n    - https://a.test/atom\n"
    )
    registry = load_registry(path)
    assert registry.news.feeds == ("https://news.test/rss", "https://a.test/atom")
    resource = news_from_env({}, registry.news.feeds)
    assert resource.settings().feeds == ("https://news.test/rss", "https://a.test/atom")
    assert load_registry(registry_path()).news.feeds == ()


def test_a_bad_registry_feed_names_the_file_and_field(tmp_path):
    path = registry_with(tmp_path, "news:\n  feeds:\n    - https://ok.test/rss\n    - feeds.test\n")
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert str(path) in message
    assert "news.feeds" in message and "feed 2 ('feeds.test') is not an http(s) URL" in message


def test_an_unknown_news_field_is_refused(tmp_path):
    path = registry_with(tmp_path, "news:\n  feed: https://typo.test/rss\n")
    with pytest.raises(RegistryError, match="news"):
        load_registry(path)
