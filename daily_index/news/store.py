"""Where a day's headlines live: `news/<date>.parquet` and `news/<date>.json`.

The Parquet holds one row per headline (title, link, source, published, summary) and its
embedding (a list of float32, unit length), so a headline is embedded once. The JSON says
what the news step did that day (`ok`, `skipped` with the reason, `no_headlines`) and each
feed's result, for the report.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from daily_index.news.feeds import Headline
from daily_index.storage.objectstore import ObjectStore

SCHEMA = pa.schema(
    [
        ("title", pa.string()),
        ("link", pa.string()),
        ("source", pa.string()),
        ("published", pa.timestamp("s", tz="UTC")),
        ("summary", pa.string()),
        ("embedding", pa.list_(pa.float32())),
    ]
)


def headlines_key(day: date) -> str:
    return f"news/{day.isoformat()}.parquet"


def news_status_key(day: date) -> str:
    return f"news/{day.isoformat()}.json"


@dataclass(frozen=True)
class StoredHeadlines:
    headlines: list[Headline]
    embeddings: np.ndarray
    """(n, dim) float32, unit rows; (0, 0) when there are none."""


def headlines_to_parquet(headlines: list[Headline], embeddings: np.ndarray) -> bytes:
    if len(headlines) != len(embeddings):
        raise ValueError(f"{len(headlines)} headlines but {len(embeddings)} embeddings")
    table = pa.table(
        {
            "title": [h.title for h in headlines],
            "link": [h.link for h in headlines],
            "source": [h.source for h in headlines],
            "published": [h.published for h in headlines],
            "summary": [h.summary for h in headlines],
            "embedding": [np.asarray(v, dtype=np.float32).tolist() for v in embeddings],
        },
        schema=SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def headlines_from_parquet(data: bytes) -> StoredHeadlines:
    table = pq.read_table(io.BytesIO(data))
    rows = table.to_pylist()
    headlines = [
        Headline(
            title=r["title"],
            link=r["link"] or "",
            source=r["source"] or "",
            published=r["published"],
            summary=r["summary"] or "",
        )
        for r in rows
    ]
    vectors = [r["embedding"] for r in rows]
    embeddings = (
        np.asarray(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)
    )
    return StoredHeadlines(headlines, embeddings)


def read_headlines(store: ObjectStore, day: date) -> StoredHeadlines | None:
    data = store.read_bytes(headlines_key(day))
    return None if data is None else headlines_from_parquet(data)


def write_headlines(
    store: ObjectStore, day: date, headlines: list[Headline], embeddings: np.ndarray
) -> str:
    key = headlines_key(day)
    store.put(
        key,
        headlines_to_parquet(headlines, embeddings),
        content_type="application/vnd.apache.parquet",
    )
    return key


def read_news_status(store: ObjectStore, day: date) -> dict[str, Any] | None:
    data = store.read_bytes(news_status_key(day))
    return None if data is None else json.loads(data)


def write_news_status(store: ObjectStore, day: date, status: dict[str, Any]) -> None:
    store.put(
        news_status_key(day),
        json.dumps(status, indent=1, sort_keys=True).encode(),
        content_type="application/json",
    )
