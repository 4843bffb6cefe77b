"""The demo's recorded feeds, served by its local replay, parse into the demo day's news."""

from daily_index.news.feeds import NewsSettings, collect_headlines
from daily_index.replay import DEMO_DAY, ReplayServer


def test_the_replay_serves_the_recorded_rss_and_atom_feeds():
    with ReplayServer() as server:
        urls = server.news_feed_urls()
        headlines, results = collect_headlines(NewsSettings(feeds=tuple(urls)), DEMO_DAY)
        missing = server.url + "/news/unknown.xml"
        _, [unknown] = collect_headlines(NewsSettings(feeds=(missing,)), DEMO_DAY)
    assert [r.state for r in results] == ["ok", "ok"]
    # The RSS repeats one item: stored once. Items of other days are left out.
    assert (results[0].items, results[0].of_the_day) == (8, 7)
    assert len(headlines) == 9
    assert all(h.published.date() == DEMO_DAY for h in headlines)
    assert all(h.link.startswith("https://demo.invalid/") for h in headlines)
    assert unknown.state == "failed" and unknown.reason == "HTTP 404"
