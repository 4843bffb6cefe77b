from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daily_index.delivery import load_subscribers, redact_url

SECRET = "hunter2secret"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_yaml_bad_url_reported_with_its_line_and_others_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "subs.yaml",
        f"""
        subscribers:
          - id: alice
            name: Alice
            urls:
              - "mailto://alice:{SECRET}@mail.example.org?to=alice@example.org"
            fallback: json://hooks.example.org/alice
            tags: [vip, email]
            receives: pdf
          - id: bob
            name: Bob
            url: nosuchscheme://bob:{SECRET}@example.org
          - id: carol
            name: Carol
            url: json://hooks.example.org/carol
            receives: summary
          - name: No Id
            url: json://hooks.example.org/x
    """,
    )
    result = load_subscribers(path)
    assert [s.id for s in result.subscribers] == ["alice", "carol"]
    assert [(p.line, p.subscriber_id) for p in result.problems] == [(9, "bob"), (16, None)]
    assert "not a usable apprise URL" in result.problems[0].message
    assert "missing field(s): id" in result.problems[1].message
    alice = result.subscribers[0]
    assert alice.tags == ("vip", "email") and alice.fallback == "json://hooks.example.org/alice"
    assert result.subscribers[1].receives == "summary"
    shown = " ".join(str(p) for p in result.problems) + repr(result.subscribers)
    assert SECRET not in shown


def test_csv_rows_report_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "subs.csv",
        f"""
        id,name,urls,fallback,tags,receives
        alice,Alice,json://hooks.example.org/a,,vip,pdf
        bob,Bob,tgram://,,,
        carol,,json://hooks.example.org/c,,,
        dave,Dave,json://hooks.example.org/d form://hooks.example.org/d2,,a;b,link
        eve,Eve,json://hooks.example.org/e,,,fax
        alice,Alice again,json://hooks.example.org/a2,,,
        frank,Frank,mailto://frank:{SECRET}@bad host,,,
    """,
    )
    result = load_subscribers(path)
    assert [s.id for s in result.subscribers] == ["alice", "dave"]
    assert result.subscribers[1].urls == (
        "json://hooks.example.org/d",
        "form://hooks.example.org/d2",
    )
    assert result.subscribers[1].tags == ("a", "b")
    lines = {p.line: p.message for p in result.problems}
    assert sorted(lines) == [3, 4, 6, 7, 8]
    assert "name" in lines[4] and "receives" in lines[6] and "duplicate" in lines[7]
    assert all(SECRET not in str(p) for p in result.problems)


def test_yaml_top_level_list_and_broken_yaml(tmp_path: Path) -> None:
    ok = write(
        tmp_path,
        "list.yml",
        """
        - id: a
          name: A
          url: json://h.example.org/a
    """,
    )
    assert [s.id for s in load_subscribers(ok).subscribers] == ["a"]
    broken = write(tmp_path, "broken.yaml", "subscribers: [\n  - id: a\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_subscribers(broken)


@pytest.mark.parametrize(
    "url, secret",
    [
        (f"mailto://user:{SECRET}@smtp.example.org?to=a@example.org", SECRET),
        (
            "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123",
            "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        ),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "TIiajkdnlazkcOXrIdevi7FQ"),
        (f"weird://x:{SECRET}@host", SECRET),
    ],
)
def test_redact_url_hides_secrets(url: str, secret: str) -> None:
    assert secret not in redact_url(url)
