"""The headlines nearest each unusual KPI move of the day (cosine similarity, numpy).

A move is described as a short sentence ("Bitcoin price falls sharply, -8.2% in a day") and
embedded with the same model as the headlines; the headlines whose embeddings are nearest
(top k, at least a minimum cosine score) are the move's "possibly related headlines". At
this scale (hundreds of headlines a day, up to 200 moves) one matrix product is the index.

Headline text is data: it is returned as plain fields for escaping where it is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from daily_index.formatting import format_change
from daily_index.news.feeds import Headline
from daily_index.report.model import KpiRow

TOP_K = 3
MIN_SCORE = 0.35
"""Below this cosine score a headline is about something else (measured on the packaged
model: related headline/move pairs score about 0.45-0.75, unrelated ones under 0.25)."""
SHARP_Z = 3.0


@dataclass(frozen=True)
class RelatedHeadline:
    title: str
    link: str
    source: str
    published: str
    """ISO 8601, UTC."""
    score: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def headline_text(headline: Headline) -> str:
    """What is embedded for a headline: its title and the start of its summary."""
    summary = headline.summary[:200]
    return f"{headline.title}. {summary}" if summary else headline.title


def move_text(row: KpiRow) -> str:
    """A sentence describing the KPI's move of the day, to search headlines with."""
    change = row.changes.get(1)
    name = row.spec.name
    if change is None or change.value == 0:
        return f"{name} unchanged"
    verb = "rises" if change.value > 0 else "falls"
    if row.zscore is not None and abs(row.zscore) >= SHARP_Z:
        verb += " sharply"
    return f"{name} {verb}, {format_change(change)} in a day"


def nearest(
    queries: np.ndarray, index: np.ndarray, *, k: int = TOP_K, min_score: float = MIN_SCORE
) -> list[list[tuple[int, float]]]:
    """For each query row, the (index row, cosine) pairs of its k nearest, best first.

    Both arrays hold unit-length rows, so the cosine is the dot product.
    """
    if len(queries) == 0:
        return []
    if len(index) == 0:
        return [[] for _ in range(len(queries))]
    scores = queries @ index.T
    k = min(k, index.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    return [
        [(int(i), float(s)) for i, s in zip(rows, values, strict=True) if s >= min_score]
        for rows, values in zip(top, picked, strict=True)
    ]


def related_headlines(
    moves: Sequence[KpiRow],
    headlines: Sequence[Headline],
    embeddings: np.ndarray,
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    k: int = TOP_K,
    min_score: float = MIN_SCORE,
) -> dict[str, list[RelatedHeadline]]:
    """The possibly related headlines of each move, by KPI id (moves without any left out)."""
    if not moves or not headlines:
        return {}
    queries = embed([move_text(row) for row in moves])
    found = nearest(queries, embeddings, k=k, min_score=min_score)
    related: dict[str, list[RelatedHeadline]] = {}
    for row, pairs in zip(moves, found, strict=True):
        if pairs:
            related[row.kpi_id] = [
                RelatedHeadline(
                    title=headlines[i].title,
                    link=headlines[i].link,
                    source=headlines[i].source,
                    published=headlines[i].published.isoformat(),
                    score=round(score, 4),
                )
                for i, score in pairs
            ]
    return related
