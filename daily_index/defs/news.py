"""`news/headlines` and `report/evidence`: the day's headlines and what the report shows.

Beside the numbers: possibly related headlines for each unusual move, historical analogs.

The news stack is optional: without it, or without any feed configured, `news/headlines`
records why it did nothing and the report says so; the rest of the report is unchanged.
"""

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg
import numpy as np

from daily_index.analogs import analog_days
from daily_index.defs.charts import CHARTS_KEY, stored_day_table
from daily_index.defs.kpis import kpi_key
from daily_index.defs.partitions import daily_partitions
from daily_index.defs.resources import ConfigurationError, StorageResource
from daily_index.news import news_stack_missing
from daily_index.news.feeds import (
    ENV_FEEDS,
    ENV_MAX_BYTES,
    ENV_TIMEOUT,
    Headline,
    NewsConfigError,
    NewsSettings,
    collect_headlines,
    deduplicate,
)
from daily_index.news.store import (
    read_headlines,
    read_news_status,
    write_headlines,
    write_news_status,
)
from daily_index.registry import KpiSpec
from daily_index.report.analysis import rank_moves
from daily_index.report.evidence import NO_SOURCES, Evidence, write_evidence
from daily_index.report.model import DayTable, unusual_moves
from daily_index.storage.objectstore import ObjectStore
from daily_index.storage.series import KpiSeriesStore

HEADLINES_KEY = dg.AssetKey(["news", "headlines"])
EVIDENCE_KEY = dg.AssetKey(["report", "evidence"])
FOLLOWED_KPIS = 6
"""What followed the analog days is shown for the day's most unusual movers (the cover's)."""


class NewsResource(dg.ConfigurableResource):
    """Which feeds to read, and how patiently.

    The feed list comes through an EnvVar (a feed URL may carry a token), so the UI shows
    the variable's name, never its value.
    """

    feeds: str = ""
    registry_feeds: list[str] = []
    """The registry's `news.feeds` (not secret), read after the variable's."""
    timeout_s: float = 10.0
    max_bytes: int = 2_000_000

    def settings(self) -> NewsSettings:
        return NewsSettings.from_env(
            {
                ENV_FEEDS: ",".join([self.feeds, *self.registry_feeds]),
                ENV_TIMEOUT: str(self.timeout_s),
                ENV_MAX_BYTES: str(self.max_bytes),
            }
        )


def news_from_env(environ: Mapping[str, str], registry_feeds: Sequence[str] = ()) -> NewsResource:
    """The news resource from DAILY_INDEX_NEWS_FEEDS, _TIMEOUT_S and _MAX_BYTES.

    The registry's `news.feeds` come after the variable's feeds (duplicates once).

    Raises:
        ConfigurationError: a feed URL, the timeout or the size limit is unusable.
    """
    try:
        settings = NewsSettings.from_env(environ)
    except NewsConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    feeds = dg.EnvVar(ENV_FEEDS) if settings.feeds else ""
    return NewsResource(
        feeds=feeds,
        registry_feeds=list(registry_feeds),
        timeout_s=settings.timeout_s,
        max_bytes=settings.max_bytes,
    )


def _embed(texts: list[str]) -> np.ndarray:
    from daily_index.news.embed import embed

    return embed(texts)


def update_headlines(
    store: ObjectStore, day: date, settings: NewsSettings
) -> tuple[dict, list[Headline]]:
    """Fetch, merge with what is stored for the day, embed what is new, store; the status.

    A re-run never loses a stored headline (feeds keep only their latest items) and never
    embeds one twice.
    """
    from daily_index.news.embed import EmbeddingUnavailable
    from daily_index.news.related import headline_text

    fetched, results = collect_headlines(settings, day)
    stored = read_headlines(store, day)
    previous = stored.headlines if stored else []
    merged = deduplicate([*previous, *fetched])
    known = (
        {(h.link, h.title): stored.embeddings[i] for i, h in enumerate(previous)} if stored else {}
    )
    fresh = [h for h in merged if (h.link, h.title) not in known]
    feeds = [r.to_dict() for r in results]
    failed = [r for r in results if r.state == "failed"]
    try:
        vectors = _embed([headline_text(h) for h in fresh])
    except EmbeddingUnavailable as exc:
        status = {"state": "skipped", "reason": f"embeddings unavailable: {exc}", "feeds": feeds}
        write_news_status(store, day, status)
        return status, []
    new = {(h.link, h.title): vectors[i] for i, h in enumerate(fresh)}
    if merged:
        matrix = np.stack(
            [known.get((h.link, h.title), new.get((h.link, h.title))) for h in merged]
        )
        write_headlines(store, day, merged, matrix)
    status = {
        "state": "ok",
        "headlines": len(merged),
        "new_headlines": len(fresh),
        "feeds_ok": len(results) - len(failed),
        "feeds_failed": len(failed),
        "feeds": feeds,
    }
    write_news_status(store, day, status)
    return status, merged


def build_news_assets(*, kpis: list[KpiSpec]) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=HEADLINES_KEY,
        group_name="news",
        partitions_def=daily_partitions,
        kinds={"rss", "parquet"},
    )
    def headlines(
        context: dg.AssetExecutionContext, storage: StorageResource, news: NewsResource
    ) -> dg.MaterializeResult:
        """The day's headlines from the configured RSS/Atom feeds, with their embeddings.

        Headlines published on the day (UTC), deduplicated by link and normalised title,
        each embedded once with all-MiniLM-L6-v2 (the packaged model; nothing is
        downloaded). A feed that fails (not XML, too large, too slow, an HTTP error) is
        listed with its reason and skipped. Without feeds or without the news extra the
        step records why and stores nothing. Stored as `news/<date>.parquet` and
        `news/<date>.json`.
        """
        day = date.fromisoformat(context.partition_key)
        store = storage.get_store()
        settings = news.settings()
        reason = NO_SOURCES if not settings.feeds else news_stack_missing()
        if reason is not None:
            write_news_status(store, day, {"state": "skipped", "reason": reason})
            context.log.info(f"news skipped for {day}: {reason}")
            return dg.MaterializeResult(metadata={"state": "skipped", "reason": reason})
        status, merged = update_headlines(store, day, settings)
        for feed in status.get("feeds", []):
            if feed["state"] == "failed":
                context.log.warning(f"feed {feed['url']} skipped: {feed['reason']}")
        if status["state"] != "ok":
            context.log.warning(f"news skipped for {day}: {status['reason']}")
        return dg.MaterializeResult(
            metadata={
                "state": status["state"],
                "headlines": len(merged),
                "new_headlines": status.get("new_headlines", 0),
                "feeds_ok": status.get("feeds_ok", 0),
                "feeds_failed": status.get("feeds_failed", 0),
                "feeds": dg.MetadataValue.json(status.get("feeds", [])),
            }
        )

    @dg.asset(
        key=EVIDENCE_KEY,
        group_name="report",
        partitions_def=daily_partitions,
        deps=[CHARTS_KEY, HEADLINES_KEY, *(kpi_key(k.id) for k in kpis)],
        kinds={"numpy", "json"},
    )
    def evidence(
        context: dg.AssetExecutionContext, storage: StorageResource
    ) -> dg.MaterializeResult:
        """Beside the numbers: possibly related headlines and past days like today.

        For each unusual move of the day (|σ| >= 2), the stored headlines nearest a sentence
        describing it (cosine similarity of their embeddings, top 3 above a minimum score).
        And the 5 past days whose standardised KPI changes looked most like today's, with
        what followed them over 7 and 30 days: history, not a forecast. Read by both
        analysts and the PDF; stored as `evidence/<date>.json`.
        """
        day = date.fromisoformat(context.partition_key)
        store = storage.get_store()
        table = stored_day_table(store, kpis, day)
        result = build_evidence(store, kpis, table)
        key = write_evidence(store, result)
        analogs = result.analogs
        return dg.MaterializeResult(
            metadata={
                "news": result.news_message,
                "moves_searched": result.moves_searched,
                "moves_with_headlines": len(result.related),
                "analog_days": dg.MetadataValue.json(
                    [[d.day.isoformat(), d.similarity] for d in analogs.days] if analogs else []
                ),
                "analogs_note": (analogs.reason if analogs else None) or "",
                "stored_at": key,
            }
        )

    return [headlines, evidence]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _news_message(status: dict | None, day: date) -> tuple[str, str]:
    if status is None:
        return "not_run", f"no news collected for {day} (news/headlines has not run)"
    if status.get("state") == "skipped":
        reason = str(status.get("reason") or NO_SOURCES)
        return "skipped", reason if reason == NO_SOURCES else f"news skipped: {reason}"
    count = int(status.get("headlines", 0))
    ok, failed = int(status.get("feeds_ok", 0)), int(status.get("feeds_failed", 0))
    text = f"{_plural(count, 'headline')} of {day} from {_plural(ok, 'feed')}"
    if failed:
        text += f" ({_plural(failed, 'feed')} skipped: failed to load)"
    return "ok", text


def build_evidence(store: ObjectStore, kpis: list[KpiSpec], table: DayTable) -> Evidence:
    """Related headlines for the unusual moves and the analog days, for `table`'s day."""
    day = table.day
    state, message = _news_message(read_news_status(store, day), day)
    moves = unusual_moves(table)
    related: dict[str, list[dict]] = {}
    stored = read_headlines(store, day) if state == "ok" else None
    if moves and stored is not None and stored.headlines:
        from daily_index.news.embed import EmbeddingUnavailable
        from daily_index.news.related import related_headlines

        try:
            found = related_headlines(moves, stored.headlines, stored.embeddings, _embed)
        except EmbeddingUnavailable as exc:
            # Context, not the report: without the model the report goes out without it.
            state, message = "skipped", f"related headlines unavailable: {exc}"
            found = {}
        related = {kpi_id: [h.to_dict() for h in items] for kpi_id, items in found.items()}
    series = KpiSeriesStore(store)
    with ThreadPoolExecutor(max_workers=16) as pool:
        histories = dict(
            zip(
                [k.id for k in kpis],
                pool.map(lambda spec: series.read(spec.id, None, day), kpis),
                strict=True,
            )
        )
    follow = [r.kpi_id for r in rank_moves(list(table.rows))[:FOLLOWED_KPIS]]
    analogs = analog_days(kpis, histories, day, follow=follow)
    return Evidence(
        day=day,
        news_state=state,  # type: ignore[arg-type]
        news_message=message,
        related=related,
        moves_searched=len(moves),
        analogs=analogs,
    )
