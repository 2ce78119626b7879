"""A griffe extension: gradtx's docstrings use a few reStructuredText forms; render them as Markdown.

The library's docstrings follow optax's conventions (``.. math::`` blocks,
``Example::`` literal blocks, ``:func:`x``` roles). mkdocstrings reads
docstrings as Markdown, so this extension rewrites those forms when the
package is loaded, before the docstrings are parsed:

- ``.. math::`` + an indented block -> a ``$$ ... $$`` block (pymdownx.arithmatex);
- ``:math:`x``` -> ``\\(x\\)``;
- a line ending in ``::`` + an indented block -> the line ending in ``:`` + a fenced python block;
- ``:func:`x```, ``:class:`~a.b```, ... -> inline code;
- a simple table (``====  ====`` borders) -> a Markdown table;
- in an ``Args:`` section, ``b1, b2, eps: as in ...`` (several parameters sharing one
  description) -> one entry per parameter, each with that description.

The library files are never edited; only what the site shows.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<rest>.*)$")
_LITERAL_INTRO = re.compile(r"^(?P<indent>\s*)(?P<text>.*?)::\s*$")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`(~?)([^`]+)`")
_TABLE_BORDER = re.compile(r"^(?P<indent>\s*)=+(?:\s+=+)+\s*$")
_ARGS_TITLE = re.compile(r"^(?P<indent>\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_SHARED_ARGS = re.compile(r"^(?P<indent>\s+)(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)\s*:\s*(?P<text>.*)$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """Lines from ``start`` that are blank or indented deeper than ``indent``; trailing blanks excluded."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def _dedent(block: list[str]) -> list[str]:
    depth = min((_indent_of(line) for line in block if line.strip()), default=0)
    return [line[depth:] if line.strip() else "" for line in block]


def _xref(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.split('.')[-1] if short else target}`"


def _split_shared_args(lines: list[str]) -> list[str]:
    """``a, b: text`` inside an Args section -> ``a: text`` and ``b: text`` (continuation lines repeated)."""
    out: list[str] = []
    section_indent = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if title := _ARGS_TITLE.match(line):
            section_indent = len(title["indent"])
        elif line.strip() and section_indent is not None and _indent_of(line) <= section_indent:
            section_indent = None
        shared = _SHARED_ARGS.match(line) if section_indent is not None else None
        if shared and _indent_of(line) > section_indent:
            more, end = _indented_block(lines, i + 1, _indent_of(line))
            for name in re.split(r"\s*,\s*", shared["names"]):
                out += [f"{shared['indent']}{name}: {shared['text']}", *more]
            i = end
            continue
        out.append(line)
        i += 1
    return out


def _table_to_markdown(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """An RST simple table starting at ``start`` (top border, header, border, rows, bottom border)."""
    border = lines[start]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    borders = [i for i in range(start, len(lines)) if _TABLE_BORDER.match(lines[i])]
    if len(borders) < 3 or borders[1] != start + 2:
        return None
    end = borders[2]

    def cells(line: str) -> list[str]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == len(spans):  # tolerates a cell wider than its border
            return parts
        # the last column runs to the end of the line, as in RST; a cell wider than its border
        # pushes the boundary to the next space outside inline code
        bounds = [s for s, _ in spans] + [max(len(line), spans[-1][1])]
        for k in range(1, len(bounds) - 1):
            b = max(bounds[k], bounds[k - 1])
            while b < len(line) and (line[b - 1] != " " or line[:b].count("`") % 2):
                b += 1
            bounds[k] = b
        return [line[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:])]

    pad = " " * _indent_of(border)
    rows = [cells(lines[start + 1])] + [cells(line) for line in lines[start + 3:end] if line.strip()]
    table = ["| " + " | ".join(row) + " |" for row in rows]
    table.insert(1, "|" + "---|" * len(spans))
    return ["", *(pad + row for row in table), ""], end + 1


def rst_to_markdown(text: str) -> str:
    """Rewrites the reStructuredText forms above in one docstring."""
    lines = _split_shared_args(text.split("\n"))
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if math := _MATH_DIRECTIVE.match(line):
            pad = math["indent"]
            body, i = _indented_block(lines, i + 1, len(pad))
            body = ([math["rest"]] if math["rest"] else []) + _dedent(body)
            body = [_XREF_ROLE.sub(lambda m: m[2].split(".")[-1] if m[1] else m[2], b) for b in body]
            if out and out[-1].strip():
                out.append("")
            out += [pad + "$$", *(pad + b if b else "" for b in body if b.strip()), pad + "$$", ""]
            continue
        if _TABLE_BORDER.match(line) and (table := _table_to_markdown(lines, i)):
            rows, i = table
            out += [_XREF_ROLE.sub(_xref, row) for row in rows]
            continue
        literal = _LITERAL_INTRO.match(line)
        if literal and not line.lstrip().startswith(".."):
            pad = literal["indent"]
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent_of(lines[j]) > len(pad):
                body, i = _indented_block(lines, j, len(pad))
                text_part = literal["text"].rstrip()
                if text_part:
                    out += [pad + text_part + ":", ""]
                elif out and out[-1].strip():
                    out.append("")
                out += [pad + "```python", *(pad + b if b else "" for b in _dedent(body)), pad + "```", ""]
                continue
        out.append(_XREF_ROLE.sub(_xref, _MATH_ROLE.sub(r"\\(\1\\)", line)))
        i += 1
    return "\n".join(out).rstrip("\n")


class RstToMarkdown(griffe.Extension):
    """Rewrites every loaded object's docstring with :func:`rst_to_markdown`."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
