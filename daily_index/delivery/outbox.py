"""The local outbox channel: an apprise plugin (`outbox:///folder`) writing to disk.

Used when no subscriber file is configured, so the daily run still "delivers" somewhere a
person can look, through the same code path and ledger as e-mail or webhooks.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from apprise.decorators import notify

OUTBOX_SCHEMA = "outbox"


def outbox_url(folder: str | Path) -> str:
    """The apprise URL that writes into `folder` (made absolute)."""
    return f"{OUTBOX_SCHEMA}://localhost{quote(str(Path(folder).expanduser().resolve()))}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "message"


@notify(on=OUTBOX_SCHEMA, name="Local outbox")
def _write_outbox(
    body: str,
    title: str,
    notify_type: Any,
    meta: dict[str, Any],
    attach: Any = None,
    *args: Any,
    **kwargs: Any,
) -> bool:
    # The URL is always outbox://localhost/<absolute folder> (see `outbox_url`).
    folder = Path(unquote(str(meta.get("fullpath") or "/")))
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{time.monotonic_ns() % 10**6:06d}-{_slug(title)}"
    files = []
    for item in attach or []:
        target = folder / f"{stem}-{_slug(Path(item.name or 'attachment').stem)}.pdf"
        shutil.copyfile(item.path, target)
        files.append(target.name)
    message = {"title": title, "body": body, "type": str(notify_type), "attachments": files}
    (folder / f"{stem}.json").write_text(json.dumps(message, indent=2), encoding="utf-8")
    return True
