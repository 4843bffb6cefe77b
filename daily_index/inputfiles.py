"""Reading the files people edit (the KPI registry, subscriber lists) as UTF-8 text.

A file is UTF-8, with or without a byte-order mark, or it is refused with a message that
names the file and what is wrong with it (UTF-16, latin-1/Windows-1252 bytes, binary),
instead of a traceback or a silently mangled name.
"""

from __future__ import annotations

import codecs
from pathlib import Path

_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32 (little-endian, with a byte-order mark)"),
    (codecs.BOM_UTF32_BE, "UTF-32 (big-endian, with a byte-order mark)"),
    (codecs.BOM_UTF16_LE, "UTF-16 (little-endian, with a byte-order mark)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (big-endian, with a byte-order mark)"),
)
SAVE_AS = "save it as UTF-8"


class InputFileError(ValueError):
    """A file that cannot be read as UTF-8 text; the message names the file and the problem."""


def decode_utf8(data: bytes, *, source: str) -> str:
    """`data` as text: UTF-8, a leading UTF-8 byte-order mark dropped.

    Raises:
        InputFileError: UTF-16/32, binary data, or bytes that are not UTF-8 (the message
            gives the first bad byte's line and column).
    """
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise InputFileError(f"{source}: the file is {name}, not UTF-8; {SAVE_AS}")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data:
        head = data[:4096]
        # ASCII text in UTF-16 has a NUL in every other byte.
        if head.count(b"\x00") * 3 >= len(head):
            raise InputFileError(
                f"{source}: the file looks like UTF-16 without a byte-order mark, not UTF-8; "
                f"{SAVE_AS}"
            )
        raise InputFileError(f"{source}: the file is binary (it contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise InputFileError(
            f"{source}: not UTF-8: byte 0x{bad} at line {line}, column {column} cannot be "
            f"decoded (latin-1 or Windows-1252 text?); {SAVE_AS}"
        ) from None


def read_utf8(path: str | Path, *, what: str) -> str:
    """The text of the file at `path` (see `decode_utf8`); `what` names it in errors.

    Raises:
        InputFileError: The file cannot be read, or is not UTF-8 text.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    return decode_utf8(data, source=str(path))
