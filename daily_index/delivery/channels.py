"""What each channel gets: the PDF attached where it takes files and the size fits, else a link.

A limit is the largest PDF (its size on disk) a channel is sent as an attachment; 0 means
never attach. Defaults, per apprise URL scheme (a secure variant such as `mailtos` or
`jsons` follows its plain scheme unless given its own entry):

- e-mail (`mailto`): 7.5 MB, since base64 adds a third and servers commonly take 10 MB;
- Discord (`discord`): 10 MB (webhooks take 10 MiB per request, message included);
- Telegram (`tgram`): 50 MB (the Bot API's document limit);
- generic webhooks (`json`, `form`, `xml`): 0, never: they would carry the file as base64
  text to every endpoint; they get the link;
- the local outbox: no limit;
- any other channel whose apprise plugin takes attachments: 5,120 KiB (apprise's usual
  attachment cap); one that does not, and Slack webhooks (which drop them): 0.

`DAILY_INDEX_ATTACH_LIMITS` overrides them: comma-separated `scheme=size` entries, a size
in bytes or with a unit (`KB`, `MB`, `GB` are powers of 1000; `KiB`, `MiB`, `GiB` of 1024),
`0` for never, and `default=size` for every scheme without its own entry (built-in defaults
included), e.g. `mailto=5MB,discord=8MiB` or `outbox=0,default=0` (links everywhere).
A channel whose apprise plugin takes no files is never sent one, whatever the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from apprise.manager_plugins import NotificationManager
from apprise.plugins.slack import NotifySlack, SlackMode

Delivered = Literal["file", "link", "no link", "summary"]
"""What an endpoint was sent: the PDF attached; the summary and a link to the PDF; the
summary saying no link is available (the PDF did not fit and there is no link); or the
summary alone because the subscriber asked for that (`receives: summary`)."""

ATTACH_LIMITS_ENV = "DAILY_INDEX_ATTACH_LIMITS"

MB = 1_000_000
APPRISE_ATTACH_CAP = 5_120 * 1024
DEFAULT_LIMITS: dict[str, int | None] = {
    "mailto": 7_500_000,
    "discord": 10 * MB,
    "tgram": 50 * MB,
    "json": 0,
    "form": 0,
    "xml": 0,
    "outbox": None,
}
"""Bytes per scheme; None is no limit, 0 never attach."""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": MB,
    "gb": 1000 * MB,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_PLUGINS = NotificationManager()


class AttachLimitsError(ValueError):
    """`DAILY_INDEX_ATTACH_LIMITS` is malformed; the message names the entry."""


def parse_size(text: str) -> int:
    """`7MB` -> 7,000,000; `8MiB` -> 8,388,608; `0` -> 0. Raises ValueError."""
    match = _SIZE.fullmatch(text.strip())
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{text.strip()!r} is not a size (a number of bytes, or with KB, MB, GB, KiB, MiB, GiB)"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_attach_limits(text: str | None, *, variable: str = ATTACH_LIMITS_ENV) -> dict[str, int]:
    """The `scheme=size` entries of `text` (empty for None or blank).

    Raises:
        AttachLimitsError: An entry without `=`, an unknown scheme, a bad size or a scheme
            given twice; the message names the variable and the entry.
    """
    limits: dict[str, int] = {}
    if not text or not text.strip():
        return limits
    for n, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        where = f"{variable} entry {n} {entry[:60]!r}"
        scheme, sep, size = entry.partition("=")
        scheme = scheme.strip().lower()
        if not sep or not scheme:
            raise AttachLimitsError(f"{where}: expected scheme=size, e.g. mailto=7MB")
        if scheme != "default" and not _is_scheme(scheme):
            raise AttachLimitsError(
                f"{where}: {scheme!r} is not an apprise URL scheme (e.g. mailto, discord, "
                "tgram, json, or default)"
            )
        if scheme in limits:
            raise AttachLimitsError(f"{where}: {scheme!r} is given twice")
        try:
            limits[scheme] = parse_size(size)
        except ValueError as exc:
            raise AttachLimitsError(f"{where}: {exc}") from None
    return limits


@dataclass(frozen=True)
class AttachPolicy:
    """Per-scheme attachment limits: the defaults above, then the operator's overrides."""

    overrides: Mapping[str, int] = field(default_factory=dict)

    def limit(self, scheme: str, takes_files: bool) -> int | None:
        """The largest PDF attached on `scheme` in bytes (None: no limit, 0: never).

        A channel whose plugin takes no files gets 0 whatever the settings say.
        """
        if not takes_files:
            return 0
        scheme = scheme.lower()
        names = [scheme]
        if scheme.endswith("s") and _is_scheme(scheme[:-1]):
            names.append(scheme[:-1])
        for name in [*names, "default"]:
            if name in self.overrides:
                return self.overrides[name]
        for name in names:
            if name in DEFAULT_LIMITS:
                return DEFAULT_LIMITS[name]
        return APPRISE_ATTACH_CAP

    def attaches(self, scheme: str, takes_files: bool, size: int) -> bool:
        limit = self.limit(scheme, takes_files)
        return limit is None or 0 < size <= limit


def _is_scheme(scheme: str) -> bool:
    return scheme in _PLUGINS or scheme in DEFAULT_LIMITS


def takes_files(plugin: Any) -> bool:
    """Whether the apprise plugin sends attachments on this URL.

    Its `attachment_support`, except Slack: a Slack webhook (`mode=hook`) drops them with
    a warning; only the bot mode (an OAuth token) uploads files.
    """
    if not getattr(plugin, "attachment_support", False):
        return False
    if isinstance(plugin, NotifySlack):
        return plugin.mode == SlackMode.BOT
    return True


def decide(
    *,
    receives: str,
    scheme: str,
    takes_files: bool,
    pdf_size: int | None,
    has_link: bool,
    policy: AttachPolicy,
) -> Delivered:
    """What one endpoint is sent, from what its subscriber receives and its channel.

    `receives: pdf` attaches the PDF where it fits, else the link; `receives: link` sends
    the link, or the PDF where it fits when there is no link; `receives: summary` the
    summary alone. "no link" when neither the PDF nor a link can go.
    """
    if receives == "summary":
        return "summary"
    fits = pdf_size is not None and policy.attaches(scheme, takes_files, pdf_size)
    if receives == "link" and has_link:
        return "link"
    if fits:
        return "file"
    return "link" if has_link else "no link"
