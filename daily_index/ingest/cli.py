"""`daily-index serve-ingest`: run the push-ingestion server (uvicorn) until stopped."""

from __future__ import annotations

import os
import sys

import click

from daily_index.defs.resources import ConfigurationError, storage_from_env
from daily_index.ingest.server import IngestApp, IngestConfigError, IngestSettings
from daily_index.registry import RegistryError, current_registry
from daily_index.storage.objectstore import StorageError

EXIT_CONFIG = 2


def build_app(environ: dict[str, str]) -> IngestApp:
    """The server as the environment configures it; raises on bad configuration."""
    settings = IngestSettings.from_env(environ)
    kpis = current_registry(environ).enabled(environ)
    store = storage_from_env(environ).get_store()
    store.check()
    return IngestApp(settings, kpis=kpis, store=store)


@click.command("serve-ingest")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option("--access-log/--no-access-log", default=False, help="Log every request line.")
def serve_ingest(host: str, port: int, access_log: bool) -> None:
    """Serve signed KPI pushes: POST /api/kpi-data, POST /api/kpi-error, GET /api/health.

    Needs DAILY_INDEX_INGEST_SECRETS (comma-separated whsec_... values); the KPIs that take
    pushes are the registry's active n8n KPIs. Accepted pushes land in the inbox of the
    configured store; the ingest_push_sensor materialises them. See docs/ingest.md.
    """
    environ = dict(os.environ)
    try:
        app = build_app(environ)
    except (IngestConfigError, ConfigurationError, RegistryError, StorageError) as exc:
        click.echo(f"serve-ingest: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    import uvicorn

    click.echo(
        f"serve-ingest: http://{host}:{port} takes pushes for {len(app.kpis)} n8n KPI(s), "
        f"{len(app.settings.secrets)} secret(s); inbox in {app.store.description}",
        err=True,
    )
    uvicorn.run(
        app.asgi(),
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
