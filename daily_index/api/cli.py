"""`daily-index serve-api`: the read API on uvicorn."""

from __future__ import annotations

import logging
import os
import sys

import click

EXIT_CONFIG = 2


@click.command("serve-api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8788, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log one line per request (method, path, status; never a key).",
)
def serve_api(host: str, port: int, access_log: bool) -> None:
    """Serve the KPI list, stored series and daily PDFs over HTTP (keys: $DAILY_INDEX_API_KEYS).

    Exit 2 when a setting is missing or wrong (no key, a malformed key, a bad store or
    registry); the message names the variable, never a key.
    """
    import uvicorn
    from rich.markup import escape

    from daily_index.api import ApiConfigError, ApiSettings, create_app
    from daily_index.cli import err_console
    from daily_index.defs.resources import ConfigurationError, storage_from_env
    from daily_index.registry import RegistryError

    try:
        settings = ApiSettings.from_env(os.environ)
        store = storage_from_env(os.environ).get_store()
        app = create_app(settings=settings, store=store)
    except (ApiConfigError, ConfigurationError, RegistryError) as exc:
        err_console.print(f"[red]Configuration error:[/red] {escape(str(exc))}")
        sys.exit(EXIT_CONFIG)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "::1", "localhost"):
        logging.getLogger("daily_index.api").warning(
            "listening on %s: API keys travel in clear text unless TLS is put in front", host
        )
    limit = (
        f"{settings.rate_limit} requests per {settings.rate_window_s:g} s per key"
        if settings.rate_limit
        else "no rate limit"
    )
    err_console.print(
        f"Read API on http://{host}:{port}/v1/ ({len(settings.key_digests)} key(s), {limit}); "
        f"data from {store.description}"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        server_header=False,
        log_level="info",
    )
