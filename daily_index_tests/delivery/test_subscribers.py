from __future__ import annotations

import codecs
import re
import textwrap
from pathlib import Path

import pytest

from daily_index.delivery import (
    SubscriberFileError,
    load_subscribers,
    problems_message,
    problems_summary,
    redact_url,
)
from daily_index.delivery.subscribers import line_ranges

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
        (f"json://hooks.example.org/x?+X-Api-Key={SECRET}", SECRET),
        (f"form://hooks.example.org/x?+Authorization=Bearer%20{SECRET}", SECRET),
        (f"json://hooks.example.org/x?token={SECRET}", SECRET),
        (f"json://hooks.example.org/x?-api_key={SECRET}", SECRET),
    ],
)
def test_redact_url_hides_secrets(url: str, secret: str) -> None:
    assert secret not in redact_url(url)


CSV = "id,name,urls\nalice,Alice Müller,json://hooks.example.org/a\nbob,Bob,json://hooks.example.org/b\n"
YAML = "subscribers:\n  - id: alice\n    name: Alice Müller\n    url: json://hooks.example.org/a\n"


@pytest.mark.parametrize("name, text", [("subs.csv", CSV), ("subs.yaml", YAML)])
@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_utf8_with_or_without_bom_loads(tmp_path: Path, name: str, text: str, bom: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(bom + text.encode("utf-8"))
    loaded = load_subscribers(path)
    assert loaded.subscribers[0].id == "alice" and loaded.subscribers[0].name == "Alice Müller"
    assert not loaded.problems


@pytest.mark.parametrize("name, text", [("subs.csv", CSV), ("subs.yaml", YAML)])
@pytest.mark.parametrize(
    "encode, problem",
    [
        (lambda t: t.encode("utf-16"), "UTF-16 (little-endian, with a byte-order mark)"),
        (lambda t: t.encode("utf-16-le"), "UTF-16 without a byte-order mark"),
        (lambda t: t.encode("latin-1"), "not UTF-8: byte 0xfc at line"),
        (lambda t: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    ],
)
def test_other_encodings_are_refused_naming_file_and_problem(
    tmp_path: Path, name: str, text: str, encode, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(encode(text))
    with pytest.raises(SubscriberFileError) as info:
        load_subscribers(path)
    assert str(path) in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize(
    "header, missing",
    [("id,urls", "'name'"), ("id,name", "'urls' or 'url'"), ("name,url", "'id'")],
)
def test_csv_without_a_required_column_is_an_error(tmp_path: Path, header, missing) -> None:
    path = tmp_path / "subs.csv"
    path.write_text(f"{header}\na,json://hooks.example.org/a\n", encoding="utf-8")
    with pytest.raises(SubscriberFileError, match=f"no {re.escape(missing)} column"):
        load_subscribers(path)


@pytest.mark.parametrize(
    "name, text",
    [
        ("subs.csv", "id,name,urls\n"),
        ("subs.csv", "id,name,urls\na,,json://h.example.org/a\nb,B,nosuch://x\n"),
        ("subs.yaml", "subscribers: []\n"),
        ("subs.yaml", ""),
    ],
)
def test_a_file_with_no_usable_subscriber_is_an_error(tmp_path: Path, name, text) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SubscriberFileError, match="no usable subscriber"):
        load_subscribers(path)


def test_problems_summary_lists_twenty_and_every_line(tmp_path: Path) -> None:
    rows = ["id,name,urls", "good,Good,json://h.example.org/g"]
    rows += [f"bad{i},,json://h.example.org/{i}" for i in range(500)]
    path = tmp_path / "subs.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    loaded = load_subscribers(path)
    summary = problems_summary(loaded.problems)
    assert summary["count"] == 500 and len(summary["first"]) == 20
    assert summary["lines"] == "3-502"
    assert summary["first"][0] == "line 3 (bad0): missing field(s): name"
    message = problems_message(loaded.problems, file=path)
    assert "500 subscriber entries of subs.csv skipped (lines 3-502)" in message
    assert "... and 480 more" in message
    assert line_ranges([9, 3, 4, 5, 7, 12, 11]) == "3-5, 7, 9, 11-12"
