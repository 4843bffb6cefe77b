"""What the report shows beside the numbers: related headlines and historical analog days.

Built once per report run by `report/evidence` and stored as `evidence/<date>.json`; the
analysts and the PDF read it. Headline titles, sources and links are untrusted data from
external feeds: they are escaped wherever they are shown and travel to the LLM only inside
its data block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from daily_index.analogs import Analogs
from daily_index.storage.objectstore import ObjectStore

NewsState = Literal["ok", "skipped", "not_run"]
NO_SOURCES = "no news sources configured"


@dataclass(frozen=True)
class Evidence:
    day: date
    news_state: NewsState
    news_message: str
    """One sentence for the report: how many headlines, or why there are none."""
    related: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """KPI id -> its possibly related headlines (title, link, source, published, score)."""
    moves_searched: int = 0
    analogs: Analogs | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "news_state": self.news_state,
            "news_message": self.news_message,
            "related": self.related,
            "moves_searched": self.moves_searched,
            "analogs": None if self.analogs is None else self.analogs.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        analogs = data.get("analogs")
        return cls(
            day=date.fromisoformat(data["day"]),
            news_state=data["news_state"],
            news_message=str(data["news_message"]),
            related={str(k): list(v) for k, v in (data.get("related") or {}).items()},
            moves_searched=int(data.get("moves_searched") or 0),
            analogs=None if analogs is None else Analogs.from_dict(analogs),
        )


def evidence_key(day: date) -> str:
    return f"evidence/{day.isoformat()}.json"


def write_evidence(store: ObjectStore, evidence: Evidence) -> str:
    key = evidence_key(evidence.day)
    store.put(
        key,
        json.dumps(evidence.to_dict(), indent=1, sort_keys=True).encode(),
        content_type="application/json",
    )
    return key


def read_evidence(store: ObjectStore, day: date) -> Evidence | None:
    """The day's evidence, or None when `report/evidence` has not run for it."""
    data = store.read_bytes(evidence_key(day))
    return None if data is None else Evidence.from_dict(json.loads(data))
