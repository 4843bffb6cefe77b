"""A standalone OpenAI-compatible LLM stub for benchmarks and local end-to-end runs.

Serves `POST /v1/chat/completions` on 127.0.0.1. In `good` mode it answers a valid
analysis built from the KPI ids in the request's data block, so the whole LLM path
(request, schema, validation) runs without a real provider. Other modes reproduce
failures: `hang`, `500`, `429`, `invalid` (not JSON), `oversize` (fails validation).

    python bench/llm_stub_server.py [--port 8765] [--latency-ms 200] [--mode good]
    # then: DAILY_INDEX_LLM_BASE_URL=http://127.0.0.1:8765/v1 DAILY_INDEX_LLM_MODEL=stub \
    #       DAILY_INDEX_LLM_API_KEY=anything <run the report>

    python bench/llm_stub_server.py --bench [--kpis 200] [--latency-ms 200]
    # times analyse() on a synthetic N-KPI table against the stub, in each mode
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("good", "hang", "500", "429", "invalid", "oversize")
_BLOCK = re.compile(r"<kpi_data>\n(.*)\n</kpi_data>", re.DOTALL)


def _answer(body: dict[str, Any], mode: str) -> str:
    user = next((m["content"] for m in body.get("messages", []) if m["role"] == "user"), "")
    match = _BLOCK.search(user)
    kpis = json.loads(match.group(1))["kpis"] if match else []
    if mode == "invalid":
        return "Sure! The market looks {bullish"
    present = [k for k in kpis if k.get("value") is not None]
    return json.dumps(
        {
            "headline": "x" * 5_000 if mode == "oversize" else "Stub analysis of the day",
            "summary": f"{len(present)} of {len(kpis)} KPIs have a value.",
            "kpi_notes": [
                {
                    "kpi_id": k["id"],
                    "note": "missing" if k.get("value") is None else f"value {k['value']}",
                }
                for k in kpis
            ],
            "risks": [f"{len(kpis) - len(present)} KPIs missing"],
            "outlook": "No forecast: this is a stub.",
        }
    )


def make_server(port: int, latency_ms: float, mode: str) -> ThreadingHTTPServer:
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if stop.wait(3600 if mode == "hang" else latency_ms / 1000):
                return
            status, headers = 200, {}
            if mode in ("500", "429"):
                status, headers = int(mode), {"Retry-After": "0"}
                payload: dict[str, Any] = {"error": {"message": "stub", "code": status}}
            else:
                content = _answer(body, mode)
                payload = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(json.dumps(body)) // 4,
                        "completion_tokens": len(content) // 4,
                        "total_tokens": (len(json.dumps(body)) + len(content)) // 4,
                    },
                }
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.stop_event = stop  # type: ignore[attr-defined]
    return server


def _synthetic_table(kpis: int):
    from datetime import date

    from daily_index.formatting import Change
    from daily_index.registry import KpiSpec
    from daily_index.report.model import DayTable, KpiRow

    rows = []
    for i in range(kpis):
        spec = KpiSpec.model_validate(
            {
                "id": f"kpi_{i:03d}",
                "name": f"Synthetic KPI {i}",
                "description": "bench",
                "type": "price",
                "unit": "USD",
                "source": {"kind": "n8n"},
                "analysisConfig": {"alertThresholds": {"high": 150.0}},
                "metadata": {"source": "bench", "category": "bench"},
            }
        )
        missing = i % 50 == 49
        value = None if missing else 100.0 + i * 0.37
        rows.append(
            KpiRow(
                spec=spec,
                value=value,
                status="failed" if missing else "ok",
                changes={
                    1: Change((i % 7) - 3.0, "pct"),
                    7: Change((i % 13) - 6.0, "pct"),
                    30: None,
                },
                crossed="high" if value is not None and value >= 150 else None,
                reason="HTTP 503 from source" if missing else None,
            )
        )
    return DayTable(day=date(2026, 11, 20), rows=tuple(rows), window_days=90)


def bench(kpis: int, latency_ms: float) -> None:
    from daily_index.report.analysis import LlmSettings, analyse, build_messages

    table = _synthetic_table(kpis)
    prompt_chars = sum(len(m["content"]) for m in build_messages(table))
    print(f"{kpis} KPIs: prompt {prompt_chars:,} characters")
    for mode in MODES:
        server = make_server(0, latency_ms, mode)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        settings = LlmSettings(
            api_key="bench",
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
            model="stub",
            timeout_s=2.0,
            max_retries=2,
            total_budget_s=5.0,
        )
        started = time.perf_counter()
        result = analyse(table, settings)
        elapsed = time.perf_counter() - started
        server.stop_event.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        print(
            f"  {mode:9s} {elapsed * 1000:7.0f} ms  analyst={result.analyst:10s} "
            f"notes={len(result.analysis.kpi_notes):3d}  fallback={result.fallback_reason}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--mode", choices=MODES, default="good")
    parser.add_argument("--bench", action="store_true", help="time analyse() in every mode")
    parser.add_argument("--kpis", type=int, default=200)
    args = parser.parse_args()
    if args.bench:
        bench(args.kpis, args.latency_ms)
        return
    server = make_server(args.port, args.latency_ms, args.mode)
    print(f"LLM stub ({args.mode}) on http://127.0.0.1:{server.server_address[1]}/v1")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
