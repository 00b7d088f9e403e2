"""Reading order of a PDF page from glyph geometry (pure: no PDF library; ``pdf`` feeds it pdfium's boxes).

- **Lines.** Characters come in pdfium's order, split into runs where pdfium breaks a line or a wide gap
  opens (narrower between CJK characters, which have no word spaces). A run whose consecutive glyphs step downwards is *vertical* (縦書き); a page is vertical when
  most of its characters are in vertical runs.
- **Vertical pages** are turned into the horizontal case by a rotation of the boxes: a column read top
  to bottom becomes a line read left to right, columns ordered right to left become lines ordered top to
  bottom, and tiers (段) stacked top to bottom become columns left to right. Everything below then works
  unchanged. Lines in the page's other direction (a horizontal title or caption on a vertical page, a
  vertical box on a horizontal one) are laid out apart and each of their paragraphs goes before the first
  paragraph of the page's direction that starts below it.
- **Columns, any number.** Lines are grouped into rows (overlapping y ranges), top to bottom. A row whose
  segments leave wide gaps opens a block whose gutters are those gaps; the next rows join it while no
  line crosses a gutter (a gutter narrows to the free space every row leaves). A full-width line (title,
  header, a paragraph across the page) crosses the gutters and closes the block, so a page can change from
  one to three to two columns. A block with gutters is read column by column when it looks like running
  text (at least two columns of two or more lines; in each, a median line of ``_MIN_COLUMN_CHARS``
  characters and most lines filling three quarters of the column's width) or when the content stream
  draws it column after column (an index with letter headings); otherwise (a table, an option or
  definition list, a contents page with page numbers, a header with a left and a right part) row by row,
  each row one line with its pieces separated by spaces, standing alone (not joined into a paragraph).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from cjkrag.ingest.readers.base import is_cjk, join_lines

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (PDF space: y grows upwards)

# a gap this many character heights wide is a gutter between a row's lines (a LaTeX two-column gutter is
# about 1 em), and splits a pdfium line between two CJK characters; Latin lines split at _SPLIT_EM
_GAP_EM = 0.8
_SPLIT_EM = 2.5
_MIN_COLUMN_CHARS = 6
_FULL = 0.75  # a line this wide of its column's width is "full"; running text has mostly full lines
_MIN_FULL_SHARE = 0.6


@dataclass
class Line:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    vertical: bool = False
    order: int = 0  # position in the content stream (pdfium's order)
    cells: int = 1  # a row of this many separate pieces (table cells) read as one line

    @property
    def height(self) -> float:
        """Thickness across the reading direction (the font size, roughly)."""
        return max((self.x1 - self.x0) if self.vertical else (self.y1 - self.y0), 1.0)


def lines_from_chars(chars: Sequence[tuple[str, Box]], generated: Collection[int] = ()) -> list[Line]:
    """Lines from pdfium's characters in stream order ("\n" where pdfium breaks a line); ``generated``:
    indexes of the spaces pdfium inserted at visual gaps (not in the document's text)."""
    runs: list[list[tuple[str, Box, bool]]] = [[]]
    for i, (ch, box) in enumerate(chars):
        if ch == "\n":
            runs.append([])
        elif ch != "\r":
            runs[-1].append((ch, box, ch.isspace() and i not in generated))
    out: list[Line] = []
    for run in runs:
        out.extend(_split_run(run))
    for i, ln in enumerate(out):
        ln.order = i
    votes = [len(ln.text) if ln.vertical else -len(ln.text) for ln in out if len(ln.text) > 1]
    page_vertical = sum(votes) > 0
    for ln in out:
        if len(ln.text) == 1:
            ln.vertical = page_vertical  # one glyph has no direction: the page's
    return out


def is_vertical_page(lines: Sequence[Line]) -> bool:
    return sum(len(ln.text) for ln in lines if ln.vertical) > sum(len(ln.text) for ln in lines if not ln.vertical)


def _split_run(run: list[tuple[str, Box, bool]]) -> list[Line]:
    """One pdfium line as one or more: split where a wide gap opens (two columns on one baseline, table
    cells), or where a vertical run jumps back up (pdfium joins columns of aligned tiers). Between two CJK
    characters with no space of the document's own between them, a gap of ``_GAP_EM`` splits (CJK text has
    no word spaces: such a gap is a gutter); elsewhere ``_SPLIT_EM`` (Latin word spaces stretch)."""
    glyphs = [(ch, b) for ch, b, _ in run if not ch.isspace()]
    vertical = _is_vertical(glyphs)
    out: list[Line] = []
    seg: list[tuple[str, Box]] = []
    last: tuple[str, Box] | None = None
    spaced = False  # a space of the document's own since the last glyph
    for ch, box, real_space in run:
        if ch.isspace():
            spaced = spaced or real_space
        else:
            if last is not None:
                lb = last[1]
                size = max((lb[2] - lb[0]) if vertical else (lb[3] - lb[1]), 4.0)
                gap = (lb[1] - box[3]) if vertical else (box[0] - lb[2])
                back = vertical and box[1] > lb[3]
                cjk_gap = not vertical and not spaced and is_cjk(last[0]) and is_cjk(ch)
                if gap > (_GAP_EM if cjk_gap else _SPLIT_EM) * size or back:
                    out.extend(_make_line(seg, vertical))
                    seg = []
            last, spaced = (ch, box), False
        seg.append((ch, box))
    out.extend(_make_line(seg, vertical))
    return out


def _is_vertical(glyphs: list[tuple[str, Box]]) -> bool:
    down = across = 0
    for (_, a), (_, b) in itertools.pairwise(glyphs):
        dx = (b[0] + b[2]) / 2 - (a[0] + a[2]) / 2
        dy = (b[1] + b[3]) / 2 - (a[1] + a[3]) / 2
        if -dy > abs(dx):
            down += 1
        elif dx > abs(dy):
            across += 1
    return down > across


def _make_line(seg: list[tuple[str, Box]], vertical: bool) -> list[Line]:
    boxes = [b for ch, b in seg if not ch.isspace()]
    text = "".join(ch for ch, _ in seg).strip()
    if not text or not boxes:
        return []
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    return [Line(text, x0, y0, max(b[2] for b in boxes), max(b[3] for b in boxes), vertical)]


def rotate(line: Line, page_height: float) -> Line:
    """A vertical page's line in the equivalent horizontal geometry (see the module docstring)."""
    return Line(line.text, page_height - line.y1, line.x0, page_height - line.y0, line.x1, False, line.order)


# --------------------------------------------------------------------------------------- reading order


@dataclass
class _Block:
    rows: list[list[Line]]
    gutters: list[tuple[float, float]] = field(default_factory=list)


def reading_order(lines: Sequence[Line]) -> list[list[Line]]:
    """Blocks of lines in reading order; each block's lines are in order (a column's, then the next's)."""
    if not lines:
        return []
    em = statistics.median(ln.height for ln in lines)
    min_gap = _GAP_EM * em
    blocks: list[_Block] = []
    for row in _rows(lines):
        gaps = _row_gaps(row, min_gap)
        cur = blocks[-1] if blocks else None
        if cur is not None and cur.gutters:
            narrowed = _narrow(cur.gutters, row, min_gap)
            if narrowed is None and _inside(gaps, cur.gutters):
                narrowed = gaps  # the block's first rows left wider gaps (a letter heading of an index)
            if narrowed is not None:
                cur.rows.append(row)
                cur.gutters = narrowed
                continue
        elif cur is not None and not gaps:
            cur.rows.append(row)
            continue
        blocks.append(_Block([row], gaps))
    ordered: list[list[Line]] = []
    flowing = False  # the last block was read row by row: the next such block continues it
    for block in blocks:
        columns = _columns(block)
        if columns is None:
            rows = [_join_row(row) for row in block.rows]
            if flowing:
                ordered[-1].extend(rows)  # a paragraph may run on across a block boundary
            else:
                ordered.append(rows)
            flowing = True
        else:
            ordered.extend(columns)
            flowing = False
    return ordered


def _rows(lines: Sequence[Line]) -> list[list[Line]]:
    """Lines grouped by overlapping y ranges (by more than half the smaller line), top to bottom."""
    rows: list[list[Line]] = []
    for ln in sorted(lines, key=lambda ln: (-ln.y1, ln.x0)):
        if rows:
            first = rows[-1][0]
            overlap = min(first.y1, ln.y1) - max(first.y0, ln.y0)
            if overlap > 0.5 * min(first.y1 - first.y0, ln.y1 - ln.y0):
                rows[-1].append(ln)
                continue
        rows.append([ln])
    return [sorted(row, key=lambda ln: ln.x0) for row in rows]


def _join_row(row: list[Line]) -> Line:
    """A row read as a row: its pieces (split at gaps) one line again, left to right, a space between."""
    if len(row) == 1:
        return row[0]
    return Line(
        " ".join(ln.text for ln in row), min(ln.x0 for ln in row), min(ln.y0 for ln in row),
        max(ln.x1 for ln in row), max(ln.y1 for ln in row), False, min(ln.order for ln in row), len(row),
    )  # fmt: skip


def _row_gaps(row: list[Line], min_gap: float) -> list[tuple[float, float]]:
    gaps = []
    right = row[0].x1
    for ln in row[1:]:
        if ln.x0 - right >= min_gap:
            gaps.append((right, ln.x0))
        right = max(right, ln.x1)
    return gaps


def _inside(gaps: list[tuple[float, float]], gutters: list[tuple[float, float]]) -> bool:
    """Each gap within its gutter, one to one (such gaps are never crossed by the block's rows so far)."""
    return len(gaps) == len(gutters) and all(
        a - 1 <= ga and gb <= b + 1 for (a, b), (ga, gb) in zip(gutters, gaps, strict=True)
    )


def _narrow(gutters: list[tuple[float, float]], row: list[Line], min_gap: float) -> list[tuple[float, float]] | None:
    """The gutters narrowed to the free space ``row`` leaves, or None when a line of the row crosses one."""
    out = []
    for a, b in gutters:
        mid = (a + b) / 2
        for ln in row:
            if ln.x0 < mid < ln.x1:
                return None
            if ln.x1 <= mid:
                a = max(a, ln.x1)
            else:
                b = min(b, ln.x0)
        if b - a < min_gap:
            return None
        out.append((a, b))
    return out


def _columns(block: _Block) -> list[list[Line]] | None:
    """The block's columns, left to right, each top to bottom, when it looks like running text."""
    if not block.gutters:
        return None
    bounds = [g[0] for g in block.gutters]
    columns: list[list[Line]] = [[] for _ in range(len(bounds) + 1)]
    for row in block.rows:
        for ln in row:
            columns[sum(ln.x0 >= b for b in bounds)].append(ln)
    full = [col for col in columns if len(col) >= 2]  # a column's one-line tail says nothing
    if len(full) < 2:
        return None
    if not all(_running_text(col) for col in full) and not _drawn_by_column(columns):
        return None  # short or ragged cells (a table, an option list, a contents page) drawn row by row
    return [col for col in columns if col]


def _drawn_by_column(columns: list[list[Line]]) -> bool:
    """Whether the content stream draws the block column after column (it switches column only a few
    times), as a two-column index does; a table or an option list is drawn row by row."""
    which = sorted((ln.order, k) for k, col in enumerate(columns) for ln in col)
    switches = sum(a[1] != b[1] for a, b in itertools.pairwise(which))
    return switches <= max(2 * (len(columns) - 1), len(which) // 10)


def _running_text(column: list[Line]) -> bool:
    """Lines of flowing text: long enough, and most of them fill the column's width (a table's or a
    definition list's cells vary in width)."""
    if statistics.median(len("".join(ln.text.split())) for ln in column) < _MIN_COLUMN_CHARS:
        return False
    left, right = min(ln.x0 for ln in column), max(ln.x1 for ln in column)
    full = sum(ln.x1 - ln.x0 >= _FULL * (right - left) for ln in column)
    return full >= _MIN_FULL_SHARE * len(column)


def paragraphs(lines: Sequence[Line]) -> list[tuple[str, float]]:
    """(paragraph, its tallest line) in reading order."""
    return [_text(group) for group in _groups(lines)]


def page_paragraphs(lines: Sequence[Line], page_height: float) -> tuple[list[tuple[str, float]], bool]:
    """A page's paragraphs in reading order, and whether the page is vertical (most characters are).
    Lines in the other direction (a horizontal title over vertical columns, a caption; a vertical box on a
    horizontal page) are laid out on their own, and each of their paragraphs goes before the first
    paragraph of the page's direction that starts below it."""
    vertical_page = is_vertical_page(lines)

    def groups(subset: list[Line], vertical: bool) -> list[list[Line]]:
        return _groups([rotate(ln, page_height) for ln in subset] if vertical else subset)

    def top(group: list[Line], vertical: bool) -> float:  # in page coordinates (rotated x0 = page top - y1)
        return page_height - min(ln.x0 for ln in group) if vertical else max(ln.y1 for ln in group)

    def bottom(group: list[Line], vertical: bool) -> float:
        return page_height - max(ln.x1 for ln in group) if vertical else min(ln.y0 for ln in group)

    other = not vertical_page
    pending = sorted(groups([ln for ln in lines if ln.vertical == other], other), key=lambda g: -top(g, other))
    out: list[tuple[str, float]] = []
    for group in groups([ln for ln in lines if ln.vertical == vertical_page], vertical_page):
        while pending and bottom(pending[0], other) >= top(group, vertical_page) - 2:
            out.append(_text(pending.pop(0)))
        out.append(_text(group))
    out.extend(_text(group) for group in pending)
    return out, vertical_page


def _groups(lines: Sequence[Line]) -> list[list[Line]]:
    out: list[list[Line]] = []
    for block in reading_order(lines):
        current: list[Line] = []
        for item in [*block, None]:  # None: end of the block
            if current and (item is None or not _same_paragraph(current[-1], item)):
                out.append(current)
                current = []
            if item is not None:
                current.append(item)
    return out


def _text(group: list[Line]) -> tuple[str, float]:
    return join_lines(x.text for x in group), max(x.height for x in group)


def _same_paragraph(prev: Line, line: Line) -> bool:
    if prev.cells > 1 or line.cells > 1:
        return False  # a table row stands alone
    gap = prev.y0 - line.y1  # vertical space between the two lines (PDF y grows upwards)
    return -0.5 * prev.height <= gap <= 0.8 * max(prev.height, line.height) and abs(prev.x0 - line.x0) < 3 * prev.height
