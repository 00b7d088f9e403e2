""".eml (standard library) and Outlook .msg (extra ``email``: extract-msg).

The message is one document: subject = title, ``From``/``To``/``Date`` as metadata and as the first
lines of the text, then the body (plain text preferred, HTML converted to text). Each text attachment
(.txt/.md/.html/.csv/.json, decoded with the same encoding rules) is a child document with id
``<message id>#<attachment name>`` and the message's access rule (it is read by whoever may read the
message, never more); other attachments are listed in the message metadata and not indexed. The citation
of a message is its subject (``section: [subject]``), of an attachment ``[subject, file name]`` and
``attachment``.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import PurePath
from typing import Any

from cjkrag.ingest.readers.base import ReadContext, ReaderError, ReadFailure, check_size, require
from cjkrag.ingest.readers.encoding import decode
from cjkrag.ingest.readers.text import html_to_text, read_capped
from cjkrag.types import Document

TEXT_ATTACHMENTS = (".txt", ".md", ".markdown", ".html", ".htm", ".csv", ".json", ".log")


def read_eml(ctx: ReadContext) -> Iterator[Document | ReadFailure]:
    data = read_capped(ctx)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not (msg.keys() or msg.get_payload()):
        raise ReaderError("not an e-mail message (no headers)", "export the mail as .eml (RFC 822)")
    body = _eml_body(msg)
    attachments: list[tuple[str, bytes]] = []
    for part in msg.iter_attachments():
        name = part.get_filename() or "attachment"
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            attachments.append((name, payload))
    date = ""
    if msg["date"]:
        try:
            date = parsedate_to_datetime(str(msg["date"])).isoformat()
        except (TypeError, ValueError):
            date = str(msg["date"])
    yield from _emit(ctx, str(msg["subject"] or ""), str(msg["from"] or ""), str(msg["to"] or ""), date, body, attachments, "eml")


def read_msg(ctx: ReadContext) -> Iterator[Document | ReadFailure]:
    extract_msg = require("extract_msg", "email", "extract-msg", "Outlook .msg files")
    check_size(ctx)
    try:
        msg = extract_msg.openMsg(str(ctx.path))
    except Exception as exc:  # the library raises many types for a bad file
        raise ReaderError(f"not a readable Outlook message ({type(exc).__name__}: {exc})", "re-export it from Outlook") from None
    try:
        body = msg.body or ""
        if not body.strip() and getattr(msg, "htmlBody", None):
            html = msg.htmlBody
            body = html_to_text(html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html))[1]
        attachments = []
        for att in msg.attachments:
            data = getattr(att, "data", None)
            name = getattr(att, "longFilename", None) or getattr(att, "shortFilename", None) or "attachment"
            if isinstance(data, bytes):
                attachments.append((str(name), data))
        date = msg.date.isoformat() if hasattr(msg.date, "isoformat") else str(msg.date or "")
        fields = [_nul(v) for v in (msg.subject, msg.sender, msg.to, body)]  # some writers keep the terminator
        yield from _emit(ctx, fields[0], fields[1], fields[2], date, fields[3], attachments, "msg")
    finally:
        msg.close()


def _nul(value: object) -> str:
    return str(value or "").replace("\x00", "")


def _eml_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeDecodeError):  # unknown or wrong declared charset: detect it
        raw = part.get_payload(decode=True)
        content = decode(raw, "body")[0] if isinstance(raw, bytes) else ""
    text = str(content)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)[1]
    return text.strip()


def _emit(
    ctx: ReadContext, subject: str, sender: str, to: str, date: str, body: str,
    attachments: list[tuple[str, bytes]], fmt: str,
) -> Iterator[Document | ReadFailure]:  # fmt: skip
    header = "\n".join(f"{k}: {v}" for k, v in (("Subject", subject), ("From", sender), ("To", to), ("Date", date)) if v)
    text = f"{header}\n\n{body}".strip()
    skipped = [name for name, _ in attachments if PurePath(name).suffix.lower() not in TEXT_ATTACHMENTS]
    meta: dict[str, Any] = {"format": fmt, "from": sender, "to": to, "date": date}
    if attachments:
        meta["attachments"] = [name for name, _ in attachments]
    if skipped:
        meta["attachments_not_indexed"] = skipped
    cite = {"section": [subject]} if subject else {}
    yield ctx.document(text, title=subject, metadata=meta, spans=[(0, len(text), cite)] if cite else ())
    for name, data in attachments:
        if name in skipped:
            continue
        where = f"{ctx.source}#{name}"
        try:
            att_text, encoding = decode(data, where)
        except ReaderError as exc:
            yield ReadFailure(where, exc.error, exc.fix)
            continue
        if PurePath(name).suffix.lower() in (".html", ".htm"):
            att_text = html_to_text(att_text)[1]
        if not att_text.strip():
            continue
        child_meta = {"format": "attachment", "encoding": encoding, "parent_id": ctx.doc_id, "attachment": name}
        att_cite = {"section": [subject, name] if subject else [name], "attachment": name}
        yield ctx.document(
            att_text, title=f"{subject} / {name}" if subject else name, metadata=child_meta,
            spans=[(0, len(att_text), att_cite)], doc_id=f"{ctx.doc_id}#{name}", source=where,
        )  # fmt: skip
