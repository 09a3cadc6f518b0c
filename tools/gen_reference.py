#!/usr/bin/env python3
"""Generate docs/reference/api.md from the docstrings of the library's public face.

Every name in ``coordinated_mesh.__all__`` (but ``__version__``) gets a section: its signature
(``inspect.signature``), its docstring turned into Markdown and, for a class, its public methods
and properties (those defined in ``coordinated_mesh``, inherited ones included), its documented
attributes and, for an enum, its members. The output is deterministic: the same code gives the
same bytes.

Usage (with the library's dependencies installed, e.g. ``.tox/unit/bin/python``)::

    python tools/gen_reference.py           # (re)write docs/reference/api.md
    python tools/gen_reference.py --check   # exit 1 if docs/reference/api.md is out of date
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import itertools
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "reference" / "api.md"
PACKAGE = "coordinated_mesh"
MAX_SIGNATURE_LINE = 88
"""A signature longer than this is written one parameter per line."""

_SECTIONS = ("Args", "Arguments", "Attributes", "Raises", "Returns", "Yields", "Note", "Notes")
_SECTION_RE = re.compile(rf"^({'|'.join(_SECTIONS)}):\s*$")
_ITEM_RE = re.compile(r"^([A-Za-z_*][\w.*]*(?: \([^)]*\))?):(?:\s+(.*))?$")
_ROLE_RE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_RE = re.compile(r"``(.+?)``")
_QUALIFIER_RE = re.compile(rf"\b(?:{PACKAGE}(?:\.\w+)*|typing|collections\.abc)\.(?=\w)")
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def load_package() -> ModuleType:
    """Import the library from this checkout's ``lib/``."""
    lib = str(ROOT / "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    try:
        import coordinated_mesh
    except ImportError as e:
        raise SystemExit(
            f"cannot import {PACKAGE} ({e}): run this with the project's dependencies installed, "
            "e.g. .tox/unit/bin/python tools/gen_reference.py"
        ) from None
    return coordinated_mesh


# --- Docstrings to Markdown -----------------------------------------------------------------


def inline(text: str) -> str:
    """reST inline markup to Markdown: ````x```` and ``:role:`x``` become ```x```."""

    def role(match: re.Match[str]) -> str:
        target = match[2]
        if match[1] == "~":
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return _LITERAL_RE.sub(lambda m: f"`{m[1]}`", _ROLE_RE.sub(role, text))


def _section(title: str, lines: list[str]) -> list[str]:
    """A Google-style section (``Args:`` and its indented items) as a bold title and a list."""
    body = textwrap.dedent("\n".join(lines)).strip("\n").splitlines()
    out = [f"**{title}:**", ""]
    items: list[str] = []
    for line in body:
        match = _ITEM_RE.match(line) if line and not line[0].isspace() else None
        if match and title not in ("Returns", "Yields", "Note", "Notes"):
            name, rest = match[1], match[2] or ""
            items.append(f"- `{name}`: {rest}".rstrip())
        elif items and line.strip():
            items[-1] += " " + line.strip()
        elif line.strip():
            items.append(line.strip())
    if title in ("Returns", "Yields", "Note", "Notes"):
        return [*out, " ".join(items), ""]
    return [*out, *items, ""]


def to_markdown(doc: str) -> str:
    """A (cleaned) docstring as Markdown: sections as lists, ``::`` blocks as code fences."""
    lines = doc.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        section = _SECTION_RE.match(line)
        if section:
            block: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
                block.append(lines[i])
                i += 1
            if out and out[-1]:
                out.append("")
            out += _section(section[1], block)
            continue
        if line.rstrip().endswith("::"):
            text = line.rstrip()[:-2].rstrip()
            out.append(text + ":" if text else "")
            i += 1
            code: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i][0].isspace()):
                code.append(lines[i])
                i += 1
            out += ["", "```", *textwrap.dedent("\n".join(code)).strip("\n").splitlines(), "```"]
            out.append("")
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    # Inline markup everywhere but inside code fences.
    parts = re.split(r"(```.*?```)", text, flags=re.S)
    return "".join(part if part.startswith("```") else inline(part) for part in parts)


def summary(doc: str | None) -> str:
    """The first sentence-line of a docstring, as Markdown (for the index)."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    return inline(" ".join(first.split())).replace("|", "\\|")


# --- Signatures -----------------------------------------------------------------------------


def annotation_text(annotation: Any, typevars: Mapping[str, str] | None = None) -> str:
    """An annotation as source-like text, without module qualifiers.

    ``typevars`` maps the type variables of a generic base to what the class binds them to.
    """
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    text = _QUALIFIER_RE.sub("", text)
    for name, bound in (typevars or {}).items():
        text = re.sub(rf"\b{re.escape(name)}\b", bound, text)
    return text


def bound_typevars(cls: type) -> dict[str, str]:
    """What ``cls`` binds its generic bases' type variables to (``{"BackendT": "Backend"}``)."""
    bound: dict[str, str] = {}
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            parameters = getattr(origin, "__parameters__", ())
            for parameter, argument in zip(parameters, typing.get_args(base), strict=False):
                if isinstance(parameter, typing.TypeVar) and parameter.__name__ not in bound:
                    text = (
                        argument
                        if isinstance(argument, str)
                        else getattr(argument, "__name__", inspect.formatannotation(argument))
                    )
                    bound[parameter.__name__] = _QUALIFIER_RE.sub("", text)
    return bound


def _factory_default(owner: Any, name: str) -> str:
    """What a ``default_factory`` field gets, e.g. ``{}``, or ``<factory>`` if unknowable."""
    factory: Callable[[], Any] | None = None
    if dataclasses.is_dataclass(owner):
        for field in dataclasses.fields(owner):
            if field.name == name and field.default_factory is not dataclasses.MISSING:
                factory = field.default_factory
    model_fields: dict[str, Any] = getattr(owner, "model_fields", {})
    if name in model_fields and model_fields[name].default_factory is not None:
        factory = model_fields[name].default_factory
    if factory is None:
        return "<factory>"
    try:
        return default_text(factory(), owner, name)
    except Exception:
        return "<factory>"


def _string(value: str) -> str:
    """A string literal in the code's style (double quotes) when that needs no escaping."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return repr(value)


def default_text(value: Any, owner: Any, name: str) -> str:
    """A parameter default as source-like text, with nothing run-specific (no addresses)."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isfunction(value) or inspect.isclass(value):
        return value.__qualname__
    if isinstance(value, str):
        return _string(value)
    text = repr(value)
    if text == "<factory>":
        return _factory_default(owner, name)
    return _ADDRESS_RE.sub("", text)


def _raw_annotations(cls: type) -> dict[str, str]:
    """The class's field annotations as written (``from __future__ import annotations``)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for key, value in vars(klass).get("__annotations__", {}).items():
            if isinstance(value, str):
                found[key] = value
    return found


def signature_text(name: str, obj: Any, *, owner: Any = None, is_method: bool = False) -> str:
    """``name(params) -> ret``: one line when short, else one parameter per line."""
    signature = inspect.signature(obj)
    raw = _raw_annotations(obj) if inspect.isclass(obj) else {}
    typevars = bound_typevars(owner) if inspect.isclass(owner) else {}
    params = list(signature.parameters.values())
    if is_method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    parts: list[str] = []
    keyword_marker = False
    for index, param in enumerate(params):
        if param.kind is param.KEYWORD_ONLY and not keyword_marker:
            parts.append("*")
            keyword_marker = True
        if param.kind is param.VAR_POSITIONAL:
            keyword_marker = True
        prefix = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "")
        text = prefix + param.name
        annotation = raw.get(param.name, param.annotation)
        if annotation is not param.empty:
            text += f": {annotation_text(annotation, typevars)}"
        if param.default is not param.empty:
            default = default_text(param.default, owner or obj, param.name)
            text += f" = {default}" if annotation is not param.empty else f"={default}"
        parts.append(text)
        following = params[index + 1] if index + 1 < len(params) else None
        if param.kind is param.POSITIONAL_ONLY and (
            following is None or following.kind is not param.POSITIONAL_ONLY
        ):
            parts.append("/")
    returns = ""
    if not inspect.isclass(obj) and signature.return_annotation is not signature.empty:
        returns = f" -> {annotation_text(signature.return_annotation, typevars)}"
    one_line = f"{name}({', '.join(parts)}){returns}"
    if len(one_line) <= MAX_SIGNATURE_LINE:
        return one_line
    body = "".join(f"    {part},\n" for part in parts)
    return f"{name}(\n{body}){returns}"


# --- Attribute docstrings (read from the source) --------------------------------------------


def _documented_assignments(body: list[ast.stmt], *, self_only: bool) -> Iterator[tuple[str, str]]:
    """``(name, docstring)`` for each assignment directly followed by a string literal."""
    for statement, following in itertools.pairwise(body):
        if not (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            continue
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = list(statement.targets)
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        for target in targets:
            if self_only and (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                yield target.attr, inspect.cleandoc(following.value.value)
            elif not self_only and isinstance(target, ast.Name):
                yield target.id, inspect.cleandoc(following.value.value)


def attribute_docs(cls: type) -> tuple[dict[str, str], dict[str, str]]:
    """The documented class-body names and the documented ``self.x`` set in ``__init__``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}, {}
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, ast.ClassDef):
        return {}, {}
    fields = dict(_documented_assignments(node.body, self_only=False))
    instance: dict[str, str] = {}
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            instance = dict(_documented_assignments(item.body, self_only=True))
    return fields, instance


# --- Sections -------------------------------------------------------------------------------


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum):
            return "enum"
        if issubclass(obj, BaseException):
            return "exception"
        return "class"
    return "function"


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties defined in the package, subclass first, each once."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, property | classmethod | staticmethod) or inspect.isfunction(
                value
            ):
                seen.add(name)
                yield name, value


def _member_section(cls: type, name: str, value: Any) -> list[str]:
    qualified = f"{cls.__name__}.{name}"
    if isinstance(value, property):
        returns = inspect.signature(value.fget).return_annotation if value.fget else None
        kind = "property"
        code = qualified
        if returns not in (None, inspect.Signature.empty):
            code += f": {annotation_text(returns, bound_typevars(cls))}"
        doc = inspect.getdoc(value.fget) if value.fget else None
    else:
        function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
        kind = {classmethod: "classmethod", staticmethod: "staticmethod"}.get(type(value), "method")
        code = signature_text(
            qualified, function, owner=cls, is_method=not isinstance(value, staticmethod)
        )
        doc = inspect.getdoc(function)
    lines = [f"### `{qualified}`", "", f"*{kind}*", "", "```python", code, "```", ""]
    if doc:
        lines += [to_markdown(doc), ""]
    return lines


def _enum_members(cls: type[enum.Enum]) -> list[str]:
    fields, _ = attribute_docs(cls)
    lines = ["**Members:**", ""]
    for member in cls:
        value = _string(member.value) if isinstance(member.value, str) else repr(member.value)
        text = f"- `{cls.__name__}.{member.name}` = `{value}`"
        if member.name in fields:
            text += f": {inline(' '.join(fields[member.name].split()))}"
        lines.append(text)
    return [*lines, ""]


def _attributes(cls: type, doc: str) -> list[str]:
    """Documented fields (when the docstring has no ``Attributes:``) and constructor attributes."""
    fields, instance = attribute_docs(cls)
    lines: list[str] = []
    if fields and "\nAttributes:" not in f"\n{doc}":
        lines += ["**Fields:**", ""]
        lines += [f"- `{k}`: {inline(' '.join(v.split()))}" for k, v in fields.items()]
        lines.append("")
    public = {k: v for k, v in instance.items() if not k.startswith("_")}
    if public:
        lines += ["**Attributes set by the constructor:**", ""]
        lines += [f"- `{k}`: {inline(' '.join(v.split()))}" for k, v in public.items()]
        lines.append("")
    return lines


def object_section(name: str, obj: Any) -> list[str]:
    """The Markdown section of one public name."""
    kind = _kind(obj)
    doc = inspect.getdoc(obj) or ""
    lines = [f"## `{name}`", "", f"*{kind}*, defined in `{obj.__module__}`", ""]
    if kind != "enum":
        lines += ["```python", signature_text(name, obj), "```", ""]
    if doc:
        lines += [to_markdown(doc), ""]
    if kind == "enum":
        lines += _enum_members(obj)
    elif inspect.isclass(obj):
        lines += _attributes(obj, doc)
        for member, value in _members(obj):
            lines += _member_section(obj, member, value)
    return lines


def render(package: ModuleType) -> str:
    """The whole of ``api.md``."""
    names = sorted(name for name in package.__all__ if name != "__version__")
    objects = {name: getattr(package, name) for name in names}
    lines = [
        f"# API reference: `{PACKAGE}` {package.__version__}",
        "",
        "<!-- Generated by tools/gen_reference.py from the docstrings; do not edit by hand. -->",
        "<!-- Regenerate with: python tools/gen_reference.py -->",
        "",
        f"The public face of the library: every name `from {PACKAGE} import ...` offers (its",
        "`__all__`). Everything else in the package is internal and may change. How the pieces",
        "fit together: [the architecture](../explanation/architecture.md); a walk-through:",
        "[add mesh support to your charm](../how-to/add-mesh-support.md). Wire formats:",
        "[relations](relations.md); rules for untrusted values: [parsing](parsing.md).",
        "",
        "| name | kind | summary |",
        "|---|---|---|",
    ]
    for name, obj in objects.items():
        lines.append(f"| [`{name}`](#{name.lower()}) | {_kind(obj)} | {summary(obj.__doc__)} |")
    lines.append("")
    for name, obj in objects.items():
        lines += object_section(name, obj)
    lines += testing_sections()
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def testing_sections() -> list[str]:
    """The sections of ``coordinated_mesh.testing``: its own names, then its re-exports."""
    import importlib

    module = importlib.import_module(f"{PACKAGE}.testing")
    own = {n: getattr(module, n) for n in sorted(module.__all__)}
    defined = {n: o for n, o in own.items() if getattr(o, "__module__", "") == module.__name__}
    lines = [f"## Module `{module.__name__}`", "", to_markdown(inspect.getdoc(module) or ""), ""]
    lines += ["| name | kind | summary |", "|---|---|---|"]
    for name, obj in defined.items():
        anchor = f"testing{name.lower()}"
        lines.append(f"| [`testing.{name}`](#{anchor}) | {_kind(obj)} | {summary(obj.__doc__)} |")
    reexports = [f"`{n}` (from `{o.__module__}`)" for n, o in own.items() if n not in defined]
    if reexports:
        lines += [
            "",
            "Also re-exported, to act like Kubernetes in tests: " + ", ".join(reexports) + ".",
        ]
    lines.append("")
    for name, obj in defined.items():
        lines += object_section(f"testing.{name}", obj)
    return lines


def warnings_of(package: ModuleType) -> list[str]:
    """What the reference would lack: public names and members without a docstring."""
    import importlib

    found: list[str] = []
    testing = importlib.import_module(f"{PACKAGE}.testing")
    named = [(n, getattr(package, n)) for n in sorted(package.__all__) if n != "__version__"]
    named += [
        (f"testing.{n}", getattr(testing, n))
        for n in sorted(testing.__all__)
        if getattr(getattr(testing, n), "__module__", "") == testing.__name__
    ]
    for name, obj in named:
        if not inspect.getdoc(obj):
            found.append(f"{name}: no docstring")
        if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            for member, value in _members(obj):
                function = value.fget if isinstance(value, property) else value
                if isinstance(function, classmethod | staticmethod):
                    function = function.__func__
                if function is not None and not inspect.getdoc(function):
                    found.append(f"{name}.{member}: no docstring")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is out of date"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    package = load_package()
    text = render(package)
    output: Path = args.output
    warnings = warnings_of(package)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.check and warnings:
        print(f"{len(warnings)} warnings: every public name needs its docs", file=sys.stderr)
        return 1
    if args.check:
        current = output.read_text() if output.exists() else None
        if current != text:
            print(
                f"{output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} is out "
                "of date with the docstrings: run python tools/gen_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists() or output.read_text() != text:
        output.write_text(text)
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
