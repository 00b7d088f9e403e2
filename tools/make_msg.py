"""Write an Outlook .msg file: an OLE compound file ([MS-CFB] version 3) holding a message's MAPI properties
as laid out by [MS-OXMSG] (property streams, ``__substg1.0_*`` value streams, recipient and attachment
storages, the named-property storage). Outlook itself is not needed, so tests make real .msg files at run
time instead of committing binaries (olefile, which extract-msg reads with, can only read).

    python tools/make_msg.py out.msg
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# ------------------------------------------------------------------------------------ compound file

_SECTOR, _MINI, _CUTOFF = 512, 64, 4096
_FREE, _END, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


@dataclass
class Storage:
    """A folder of the compound file: ``{name: bytes (a stream) | Storage}``."""

    items: dict[str, bytes | Storage] = field(default_factory=dict)


@dataclass
class _Entry:
    name: str
    kind: int  # 1 storage, 2 stream, 5 root
    data: bytes = b""
    children: list[int] = field(default_factory=list)
    left: int = _NOSTREAM
    right: int = _NOSTREAM
    child: int = _NOSTREAM
    start: int = _END
    size: int = 0


def _key(name: str) -> tuple[int, str]:
    return len(name), name.upper()  # [MS-CFB] 2.6.4: shorter names first, then by upper-cased code points


def _flatten(root: Storage) -> list[_Entry]:
    entries = [_Entry("Root Entry", 5)]

    def walk(storage: Storage, parent: int) -> None:
        for name, item in storage.items.items():
            if len(name) > 31:
                raise ValueError(f"compound file names are at most 31 characters: {name!r}")
            entries.append(_Entry(name, 1 if isinstance(item, Storage) else 2, b"" if isinstance(item, Storage) else item))
            index = len(entries) - 1
            entries[parent].children.append(index)
            if isinstance(item, Storage):
                walk(item, index)

    walk(root, 0)
    for entry in entries:  # siblings as a balanced binary search tree, every node black
        ordered = sorted(entry.children, key=lambda i: _key(entries[i].name))

        def build(ids: list[int]) -> int:
            if not ids:
                return _NOSTREAM
            mid = len(ids) // 2
            entries[ids[mid]].left, entries[ids[mid]].right = build(ids[:mid]), build(ids[mid + 1 :])
            return ids[mid]

        entry.child = build(ordered)
    return entries


def write_cfb(path: Path, root: Storage) -> None:
    entries = _flatten(root)
    mini_stream = bytearray()
    minifat: list[int] = []
    big: list[_Entry] = []
    for e in entries:
        if e.kind != 2:
            continue
        e.size = len(e.data)
        if e.size == 0:
            e.start = _END
        elif e.size < _CUTOFF:
            e.start = len(minifat)
            n = -(-e.size // _MINI)
            minifat += [e.start + i + 1 for i in range(n - 1)] + [_END]
            mini_stream += e.data + b"\0" * (n * _MINI - e.size)
        else:
            big.append(e)
    dir_bytes_len = len(entries) * 128
    minifat_bytes = b"".join(struct.pack("<I", v) for v in minifat)
    chunks: list[tuple[str, bytes]] = [(f"s{i}", e.data) for i, e in enumerate(big)]
    chunks += [("ministream", bytes(mini_stream)), ("minifat", minifat_bytes), ("dir", b"\0" * dir_bytes_len)]
    counts = [-(-len(data) // _SECTOR) for _, data in chunks]
    data_sectors = sum(counts)
    n_fat = 1
    while n_fat * (_SECTOR // 4) < data_sectors + n_fat:
        n_fat += 1
    if n_fat > 109:
        raise ValueError("file too large for this writer (needs DIFAT sectors)")
    fat = [_FATSECT] * n_fat  # FAT sectors first, then each chunk's sectors in a chain
    starts: dict[str, int] = {}
    for (name, _), n in zip(chunks, counts, strict=True):
        if n == 0:
            starts[name] = _END
            continue
        starts[name] = len(fat)
        fat += [len(fat) + i + 1 for i in range(n - 1)] + [_END]
    fat += [_FREE] * (n_fat * (_SECTOR // 4) - len(fat))
    for i, e in enumerate(big):
        e.start = starts[f"s{i}"]
    root_entry = entries[0]
    root_entry.start, root_entry.size = starts["ministream"], len(mini_stream)
    directory = bytearray()
    for e in entries:
        name = (e.name + "\0").encode("utf-16-le")
        color = 1
        start, size = (e.start, e.size) if e.kind != 1 else (0, 0)
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ", name, len(name), e.kind, color, e.left, e.right, e.child,
            b"\0" * 16, 0, 0, 0, start, size,
        )  # fmt: skip
    directory += b"\0" * (-len(directory) % _SECTOR)
    for i in range(len(directory) // 128 - len(entries)):  # unused entries: empty, no siblings
        off = (len(entries) + i) * 128
        directory[off + 68 : off + 80] = struct.pack("<III", _NOSTREAM, _NOSTREAM, _NOSTREAM)
    body = {name: data for name, data in chunks}
    body["dir"] = bytes(directory)
    difat = list(range(n_fat)) + [_FREE] * (109 - n_fat)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6, b"\0" * 6,
        0, n_fat, starts["dir"], 0, _CUTOFF, starts["minifat"], -(-len(minifat_bytes) // _SECTOR), _END, 0,
    ) + struct.pack("<109I", *difat)  # fmt: skip
    out = bytearray(header)
    out += b"".join(struct.pack("<I", v) for v in fat)
    for name, _ in chunks:
        data = body[name]
        out += data + b"\0" * (-len(data) % _SECTOR)
    path.write_bytes(bytes(out))


# ------------------------------------------------------------------------------------------ MAPI / MSG

PT_LONG, PT_BOOLEAN, PT_SYSTIME, PT_UNICODE, PT_BINARY = 0x0003, 0x000B, 0x0040, 0x001F, 0x0102
_FLAGS = 0x00000006  # readable | writable


def _filetime(dt: datetime) -> int:
    return int((dt - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


def _props(storage: Storage, props: Sequence[tuple[int, int, object]], header: bytes) -> None:
    """Property stream + value streams of ``(property id, type, value)`` into ``storage``."""
    stream = bytearray(header)
    for pid, ptype, value in props:
        tag = (pid << 16) | ptype
        if ptype in (PT_UNICODE, PT_BINARY):
            data = str(value).encode("utf-16-le") if ptype == PT_UNICODE else bytes(value)  # type: ignore[call-overload]
            storage.items[f"__substg1.0_{tag:08X}"] = data
            size = len(data) + 2 if ptype == PT_UNICODE else len(data)  # [MS-OXMSG] 2.4.2.2: + the terminator
            stream += struct.pack("<IIII", tag, _FLAGS, size, 0)
        elif ptype == PT_SYSTIME:
            stream += struct.pack("<IIQ", tag, _FLAGS, _filetime(value))  # type: ignore[arg-type]
        else:
            stream += struct.pack("<IIQ", tag, _FLAGS, int(value))  # type: ignore[call-overload]
    storage.items["__properties_version1.0"] = bytes(stream)


def write_msg(
    path: Path, *, subject: str, sender: tuple[str, str], to: Sequence[tuple[str, str]], date: datetime, body: str,
    attachments: Sequence[tuple[str, bytes, str]] = (), html: str | None = None,
) -> None:  # fmt: skip
    """An IPM.Note with Unicode properties; ``sender``/``to`` are (display name, address); ``attachments``
    are (file name, bytes, MIME type), attached by value."""
    display_to = "; ".join(name for name, _ in to)
    headers = (
        f"From: {sender[0]} <{sender[1]}>\r\nTo: {', '.join(f'{n} <{a}>' for n, a in to)}\r\n"
        f"Subject: {subject}\r\nDate: {date.strftime('%a, %d %b %Y %H:%M:%S %z')}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    root = Storage()
    props: list[tuple[int, int, object]] = [
        (0x001A, PT_UNICODE, "IPM.Note"), (0x0037, PT_UNICODE, subject), (0x0E1D, PT_UNICODE, subject),
        (0x1000, PT_UNICODE, body), (0x0C1A, PT_UNICODE, sender[0]), (0x0C1F, PT_UNICODE, sender[1]),
        (0x0C1E, PT_UNICODE, "SMTP"), (0x0042, PT_UNICODE, sender[0]), (0x0065, PT_UNICODE, sender[1]),
        (0x0E04, PT_UNICODE, display_to), (0x0039, PT_SYSTIME, date), (0x0E06, PT_SYSTIME, date),
        (0x007D, PT_UNICODE, headers), (0x3FDE, PT_LONG, 65001), (0x340D, PT_LONG, 0x00040000),
        (0x0E07, PT_LONG, 1), (0x0E1B, PT_BOOLEAN, 1 if attachments else 0),
    ]  # fmt: skip
    if html is not None:
        props.append((0x1013, PT_BINARY, html.encode("utf-8")))
    # top-level header: reserved 8, next recipient id, next attachment id, recipient count, attachment count, reserved 8
    _props(root, props, struct.pack("<8xIIII8x", len(to), len(attachments), len(to), len(attachments)))
    nameid = Storage({f"__substg1.0_{tag}": b"" for tag in ("00020102", "00030102", "00040102")})
    root.items["__nameid_version1.0"] = nameid
    for i, (name, address) in enumerate(to):
        recip = Storage()
        _props(recip, [
            (0x3001, PT_UNICODE, name), (0x3003, PT_UNICODE, address), (0x3002, PT_UNICODE, "SMTP"),
            (0x39FE, PT_UNICODE, address), (0x0C15, PT_LONG, 1), (0x3000, PT_LONG, i),
        ], b"\0" * 8)  # fmt: skip
        root.items[f"__recip_version1.0_#{i:08X}"] = recip
    for i, (name, data, mime) in enumerate(attachments):
        att = Storage()
        ext = Path(name).suffix
        _props(att, [
            (0x3705, PT_LONG, 1), (0x3701, PT_BINARY, data), (0x3707, PT_UNICODE, name), (0x3704, PT_UNICODE, name),
            (0x3001, PT_UNICODE, name), (0x3703, PT_UNICODE, ext), (0x370E, PT_UNICODE, mime), (0x0E21, PT_LONG, i),
            (0x0E20, PT_LONG, len(data)),
        ], b"\0" * 8)  # fmt: skip
        root.items[f"__attach_version1.0_#{i:08X}"] = att
    write_cfb(path, root)


if __name__ == "__main__":
    write_msg(
        Path(sys.argv[1] if len(sys.argv) > 1 else "sample.msg"), subject="关于退货运费的通知",
        sender=("客服部", "support@example.com"), to=[("全体员工", "all@example.com")],
        date=datetime(2026, 12, 1, 1, 30, tzinfo=UTC), body="退货运费由买家承担。",
        attachments=[("返品規定.txt", "返品の送料はお客様のご負担となります。".encode(), "text/plain")],
    )  # fmt: skip
