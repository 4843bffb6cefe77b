"""The read API (`daily-index serve-api`): KPIs, their stored series and the daily PDFs over HTTP.

See docs/api.md; the OpenAPI description is docs/api-openapi.yaml.
"""

from daily_index.api.app import create_app, report_key
from daily_index.api.settings import ApiConfigError, ApiSettings

__all__ = ["ApiConfigError", "ApiSettings", "create_app", "report_key"]
