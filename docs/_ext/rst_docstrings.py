"""A griffe extension: gradtx's docstrings use a few reStructuredText forms; render them as Markdown.

The library's docstrings follow optax's conventions (``.. math::`` blocks,
``Example::`` literal blocks, ``:func:`x``` roles). mkdocstrings reads
docstrings as Markdown, so this extension rewrites those forms when the
package is loaded, before the docstrings are parsed:

- ``.. math::`` + an indented block -> a ``$$ ... $$`` block (pymdownx.arithmatex);
- ``:math:`x``` -> ``\\(x\\)``;
- a line ending in ``::`` + an indented block -> the line ending in ``:`` + a fenced python block;
- ``:func:`x```, ``:class:`~a.b```, ... -> a link to the object's entry in the API reference
  (mkdocstrings' ``[`x`][gradtx.x]`` cross-reference), the target found by its public path:
  the name as written if it is one, else its public path (``scale_by_adam`` and
  ``gradtx.transforms.masked`` both link to ``gradtx...``), else a member of the documented
  class the docstring belongs to; names outside gradtx's public surface (``jax.Array``,
  private helpers) stay inline code;
- a simple table (``====  ====`` borders) -> a Markdown table;
- in an ``Args:`` section, ``b1, b2, eps: as in ...`` (several parameters sharing one
  description) -> one entry per parameter, each with that description.

The library files are never edited; only what the site shows.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
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


@functools.cache
def _public_paths() -> tuple[dict[int, str], dict[str, str]]:
    """Every public function, class and module of gradtx by identity, and by its short name."""
    import gradtx

    modules = ["gradtx"] + [info.name for info in pkgutil.walk_packages(gradtx.__path__, "gradtx.")
                            if not any(part.startswith("_") for part in info.name.split("."))]
    by_id: dict[int, str] = {}
    by_name: dict[str, str] = {}
    for module_name in modules:  # "gradtx" first: an object repeated in an optax view links to the top level
        module = importlib.import_module(module_name)
        by_id.setdefault(id(module), module_name)
        names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("gradtx"):
                by_id.setdefault(id(obj), f"{module_name}.{name}")
                by_name.setdefault(name, by_id[id(obj)])
    return by_id, by_name


def _resolve(dotted: str) -> Any:
    """The object at a dotted path (a module, then attributes), or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
        return obj
    return None


def _documented_member(owner: str, member: str) -> str | None:
    """``owner.member`` when the owner is public and the member has its own docstring (so an entry of its own)."""
    obj = _resolve(owner)
    if obj is None or id(obj) not in _public_paths()[0] or not inspect.isclass(obj):
        return None
    attribute = obj.__dict__.get(member)
    if attribute is None or member.startswith("_"):
        return None
    attribute = getattr(attribute, "__func__", attribute)  # classmethod, staticmethod
    attribute = attribute.fget if isinstance(attribute, property) else attribute
    documented = inspect.isfunction(attribute) and attribute.__doc__  # a NamedTuple's fields have no entry
    return f"{_public_paths()[0][id(obj)]}.{member}" if documented else None


def _target(text: str, scope: str) -> str | None:
    """The public path a role's text refers to, or None when it has no entry in the API reference."""
    by_id, by_name = _public_paths()
    text = text.lstrip(".")
    obj = _resolve(text) if text.startswith("gradtx") else None
    if obj is not None and id(obj) in by_id:
        return by_id[id(obj)]
    if "." in text:
        owner, member = text.rsplit(".", 1)
        if text.startswith("gradtx"):
            return _documented_member(owner, member)
        found = by_name.get(owner)
        return _documented_member(found, member) if found else None
    for owner in (scope, scope.rsplit(".", 1)[0]):
        if owner and (found := _documented_member(owner, text)):
            return found
    return by_name.get(text)


def _xref_in(scope: str):
    def xref(match: re.Match) -> str:
        short, text = match.groups()
        shown = f"`{text.split('.')[-1] if short else text}`"
        target = _target(text, scope)
        return f"[{shown}][{target}]" if target else shown

    return xref


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


def rst_to_markdown(text: str, scope: str = "") -> str:
    """Rewrites the reStructuredText forms above in one docstring (``scope``: the public path of its class)."""
    xref = _xref_in(scope)
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
            out += [_XREF_ROLE.sub(xref, row) for row in rows]
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
        out.append(_XREF_ROLE.sub(xref, _MATH_ROLE.sub(r"\\(\1\\)", line)))
        i += 1
    return "\n".join(out).rstrip("\n")


class RstToMarkdown(griffe.Extension):
    """Rewrites every loaded object's docstring with :func:`rst_to_markdown`."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        """The package's own docstring (``on_object`` sees only what the package contains)."""
        self.on_object(obj=pkg, **kwargs)

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        del kwargs
        if obj.docstring is not None:
            owner = obj if obj.is_class else obj.parent if obj.parent is not None and obj.parent.is_class else None
            scope = _public_paths()[0].get(id(_resolve(owner.path)), "") if owner is not None else ""
            obj.docstring.value = rst_to_markdown(obj.docstring.value, scope)
