"""Feeds from a local HTTP server: RSS and Atom, duplicates, and feeds that fail."""

from __future__ import annotations

import pytest

from daily_index.news.feeds import (
    ENV_FEEDS,
    ENV_MAX_BYTES,
    ENV_TIMEOUT,
    Headline,
    NewsConfigError,
    NewsSettings,
    collect_headlines,
    deduplicate,
    safe_url,
    title_key,
)
from daily_index_tests.news.conftest import (
    DAY,
    FeedServer,
    Route,
    atom,
    atom_entry,
    rss,
    rss_item,
)

RSS = rss(
    rss_item(
        "Bitcoin slides 8% as ETF outflows mount",
        "https://coinwire.test/btc-slides",
        "Mon, 30 Jun 2025 09:15:00 GMT",
        "Spot <b>bitcoin</b> ETFs saw &amp; record outflows.",
    ),
    rss_item(
        "Ether gains on upgrade hopes",
        "https://coinwire.test/eth-gains",
        "Mon, 30 Jun 2025 23:59:00 +0000",
    ),
    # Published at 01:00 on 1 July in UTC (18:00 on 30 June in New York): not the day's.
    rss_item(
        "Stablecoin supply hits a record",
        "https://coinwire.test/stables",
        "Mon, 30 Jun 2025 21:00:00 -0400",
    ),
    rss_item("Yesterday's news", "https://coinwire.test/old", "Sun, 29 Jun 2025 10:00:00 GMT"),
    rss_item("An undated rumour", "https://coinwire.test/rumour", None),
)
ATOM = atom(
    atom_entry(
        "Treasury yields jump after strong payrolls",
        "https://macrodesk.test/yields",
        "2025-06-30T13:30:00Z",
        "The 10-year yield rose 15 basis points.",
    ),
    # The same story as the RSS feed's first item, under another link and other casing.
    atom_entry(
        "BITCOIN slides 8% as ETF outflows mount!",
        "https://macrodesk.test/btc",
        "2025-06-30T10:00:00Z",
    ),
    # The RSS feed's second item again, same link with a trailing slash and a fragment.
    atom_entry(
        "Ether rallies on upgrade hopes",
        "https://COINWIRE.test/eth-gains/#top",
        "2025-06-30T11:00:00Z",
    ),
)


def settings(server: FeedServer, *paths: str, **kwargs) -> NewsSettings:
    return NewsSettings(feeds=tuple(server.url(p) for p in paths), **kwargs)


def test_rss_and_atom_give_the_days_headlines_deduplicated(feed_server):
    feed_server.routes.update({"/rss": Route(RSS), "/atom": Route(ATOM, "application/atom+xml")})
    headlines, results = collect_headlines(settings(feed_server, "/rss", "/atom"), DAY)

    assert [h.title for h in headlines] == [
        "Bitcoin slides 8% as ETF outflows mount",
        "Ether gains on upgrade hopes",
        "Treasury yields jump after strong payrolls",
    ]
    first = headlines[0]
    assert first.source == "Coin Wire"
    assert first.link == "https://coinwire.test/btc-slides"
    assert first.summary == "Spot bitcoin ETFs saw & record outflows."
    assert first.published.isoformat() == "2025-06-30T09:15:00+00:00"
    assert headlines[2].source == "Macro Desk"
    rss_result, atom_result = results
    assert (rss_result.state, rss_result.items, rss_result.of_the_day) == ("ok", 5, 2)
    assert rss_result.undated == 1
    assert (atom_result.state, atom_result.of_the_day) == ("ok", 3)


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (Route(b'{"items": []}', "application/json"), "not XML"),
        (Route(b"<html><body><p>Moved</p></body></html>", "text/html"), "not an RSS or Atom"),
        (Route(b"<rss><channel><item><title>cut", "application/rss+xml"), "RSS/Atom"),
        (Route(b"gone", "text/plain", status=503), "HTTP 503"),
        (Route(RSS * 200), "too large"),
        (Route(RSS * 200, declare_length=False), "too large"),
        (Route(RSS, delay_s=2.0), "too slow"),
        (Route(RSS * 3, trickle_s=0.1), "too slow"),
    ],
    ids=[
        "json",
        "html",
        "truncated",
        "http-503",
        "too-large",
        "too-large-undeclared",
        "slow",
        "trickle",
    ],
)
def test_a_failing_feed_is_recorded_and_skipped_and_the_others_used(feed_server, route, reason):
    feed_server.routes.update({"/bad": route, "/atom": Route(ATOM, "application/atom+xml")})
    chosen = settings(feed_server, "/bad", "/atom", timeout_s=0.6, max_bytes=50_000)

    headlines, results = collect_headlines(chosen, DAY)

    bad, good = results
    assert bad.state == "failed"
    assert reason in (bad.reason or "")
    assert bad.of_the_day == 0
    assert good.state == "ok"
    assert {h.source for h in headlines} == {"Macro Desk"}
    assert len(headlines) == 3


def test_an_unreachable_feed_is_recorded(feed_server):
    feed_server.routes["/atom"] = Route(ATOM, "application/atom+xml")
    chosen = NewsSettings(feeds=("http://127.0.0.1:9/feed", feed_server.url("/atom")))
    headlines, results = collect_headlines(chosen, DAY)
    assert results[0].state == "failed"
    assert "cannot fetch" in (results[0].reason or "")
    assert len(headlines) == 3


def test_a_feed_token_never_reaches_the_results(feed_server):
    feed_server.routes["/rss"] = Route(RSS)
    chosen = NewsSettings(feeds=(feed_server.url("/rss") + "?token=s3cret-feed-key",))
    _, [result] = collect_headlines(chosen, DAY)
    assert result.state == "ok"
    assert "s3cret" not in str(result.to_dict())
    assert safe_url("https://user:pw@news.test:8443/feed?key=abc") == "https://news.test:8443/feed"


def test_links_other_than_http_are_dropped_and_markup_becomes_text(feed_server):
    feed_server.routes["/rss"] = Route(
        rss(
            rss_item(
                "&lt;script&gt;alert(1)&lt;/script&gt; Bitcoin <![CDATA[<b>bold</b>]]>",
                "javascript:alert(1)",
                "Mon, 30 Jun 2025 08:00:00 GMT",
            )
        )
    )
    [headline], _ = collect_headlines(settings(feed_server, "/rss"), DAY)
    assert headline.link == ""
    assert "<b>" not in headline.title


def test_duplicates_by_link_or_title_keep_the_first():
    def item(title: str, link: str) -> Headline:
        return Headline(title, link, "s", None, "")  # type: ignore[arg-type]

    kept = deduplicate(
        [
            item("A b c", "https://x.test/1"),
            item("a, B  c!", "https://x.test/2"),
            item("Other", "https://X.test/1/"),
            item("Fresh", ""),
            item("fresh", ""),
        ]
    )
    assert [h.title for h in kept] == ["A b c", "Fresh"]
    assert title_key("Bitcoin: up 5%!") == title_key("bitcoin up 5")


def test_settings_from_the_environment():
    chosen = NewsSettings.from_env(
        {
            ENV_FEEDS: " https://a.test/rss , ,https://b.test/atom,https://a.test/rss",
            ENV_TIMEOUT: "3",
        }
    )
    assert chosen.feeds == ("https://a.test/rss", "https://b.test/atom")
    assert chosen.timeout_s == 3.0
    assert NewsSettings.from_env({}).feeds == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({ENV_FEEDS: "https://a.test/rss,file:///etc/passwd"}, "entry 2"),
        ({ENV_FEEDS: "news.test/rss"}, "entry 1"),
        ({ENV_TIMEOUT: "soon"}, ENV_TIMEOUT),
        ({ENV_MAX_BYTES: "-5"}, ENV_MAX_BYTES),
    ],
)
def test_bad_settings_name_the_variable_and_entry(env, message):
    with pytest.raises(NewsConfigError, match=message):
        NewsSettings.from_env(env)
