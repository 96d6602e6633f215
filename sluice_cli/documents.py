"""Workflow files as the CLI reads them: JSON or YAML, and the line of every field in them.

The validator and the server name problems by field path (`steps[1].config.url`); a person
editing a file wants a line. So loading a file also records, for every path in it, the line
where it is written (the key's line for an object member, the item's line for a list item), and
`Document.line_for` maps a problem's path to the closest line: a missing `config.url` points
at its `config`.

YAML is read with the YAML 1.2 core schema (as JSON and the designer's YAML view see data):
only true/false are booleans and dates stay strings, so `on: yes` or `2024-01-01` do not turn
into something the workflow did not say. A file holds one JSON document, or one or more YAML
documents separated by `---`; a directory is every .json/.yaml/.yml file under it.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CliError, UsageError

SUFFIXES = (".json", ".yaml", ".yml")


@dataclass
class Document:
    file: str  # as the user named it, so messages point where they typed
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    number: int = 1  # its position in a multi-document YAML file
    count: int = 1  # documents in its file
    yaml: bool = False

    @property
    def label(self) -> str:
        return self.file if self.count == 1 else f"{self.file} (document {self.number})"

    @property
    def slug(self) -> str:
        slug = self.data.get("slug") if isinstance(self.data, dict) else None
        return slug if isinstance(slug, str) else ""

    def line_for(self, path: str) -> int:
        """The line of `path`, or of its nearest written parent (the document's first line at worst)."""
        parts = parse_path(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), 1)

    def where(self, path: str) -> str:
        return f"{self.file}:{self.line_for(path)}"


class DocumentError(CliError):
    """A file that cannot be read as workflow documents; the message starts with file:line."""

    def __init__(self, file: str, message: str, line: int | None = None):
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}", code="unreadable")
        self.file, self.line, self.reason = file, line or 1, message


# ---- field paths ----------------------------------------------------------------------------
# The validator writes paths as identifiers joined by dots, [index], and ["quoted key"] for the
# rest (orchestrator.spec.join_path).
_PATH_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> tuple:
    """`steps[1].config["a b"]` -> ("steps", 1, "config", "a b"); stops at anything else."""
    parts: list = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            break
        name, index, quoted = match.groups()
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index))
        else:
            parts.append(json.loads(quoted))
        position = match.end()
    return tuple(parts)


# ---- finding and reading files ----------------------------------------------------------------
def find_files(target: str) -> list[Path]:
    """The workflow files a -f argument names: the file itself, or those under a directory."""
    path = Path(target)
    if path.is_dir():
        files = sorted(candidate for candidate in path.rglob("*")
                       if candidate.suffix.lower() in SUFFIXES and candidate.is_file()
                       and not any(part.startswith(".") for part in candidate.relative_to(path).parts))
        if not files:
            raise UsageError(f"{target} holds no .json, .yaml or .yml files")
        return files
    if not path.exists():
        raise UsageError(f"{target}: no such file or directory")
    return [path]


def load_file(path: Path | str) -> list[Document]:
    """Every workflow document in the file, with its line map; DocumentError if it cannot be read."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DocumentError(name, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{name}: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        documents = [_load_json(name, text)]
    else:
        documents = _load_yaml(name, text)
    for document in documents:
        _check_json_values(document)
    return documents


def load_all(targets: list[str]) -> list[Document]:
    documents: list[Document] = []
    for target in targets:
        for path in find_files(target):
            documents += load_file(path)
    return documents


# ---- JSON -------------------------------------------------------------------------------------
def _load_json(name: str, text: str) -> Document:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(name, f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise DocumentError(name, "not valid JSON: nested too deeply") from None
    return Document(name, data, _json_lines(text))


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_lines(text: str) -> dict[tuple, int]:
    """Path -> line for text that json.loads accepted (the standard parser gives no positions)."""
    from json.decoder import scanstring

    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    decoder = json.JSONDecoder()
    lines: dict[tuple, int] = {}

    def line_at(position: int) -> int:
        return bisect.bisect_right(line_starts, position)

    def skip(position: int) -> int:
        return _WHITESPACE.match(text, position).end()

    def value(position: int, path: tuple) -> int:
        position = skip(position)
        lines.setdefault(path, line_at(position))
        opening = text[position]
        if opening == "{":
            position = skip(position + 1)
            if text[position] == "}":
                return position + 1
            while True:
                position = skip(position)
                key_line = line_at(position)
                key, position = scanstring(text, position + 1)
                position = skip(position) + 1  # the colon
                child = path + (key,)
                lines[child] = key_line  # a repeated key: json.loads keeps the last, and so do we
                position = skip(value(position, child))
                if text[position] == ",":
                    position += 1
                    continue
                return position + 1
        if opening == "[":
            position = skip(position + 1)
            if text[position] == "]":
                return position + 1
            index = 0
            while True:
                position = skip(value(position, path + (index,)))
                if text[position] == ",":
                    position, index = position + 1, index + 1
                    continue
                return position + 1
        return decoder.raw_decode(text, position)[1]

    try:
        value(0, ())
    except (RecursionError, IndexError, ValueError):
        pass  # lines are a convenience: keep what was found
    return lines


# ---- YAML -------------------------------------------------------------------------------------
def _yaml_loader():
    """A SafeLoader that resolves plain scalars like YAML 1.2's core schema (and JSON) do.

    Each implicit type is narrower than PyYAML's YAML 1.1 one, so what PyYAML's dumper writes
    (export, diff) reads back unchanged.
    """
    import yaml

    class CoreLoader(yaml.SafeLoader):
        pass

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
               "tag:yaml.org,2002:timestamp"}
    CoreLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    CoreLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))
    CoreLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                                     list("-+0123456789"))
    CoreLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                     re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?$"),
                                     list("-+0123456789."))
    CoreLoader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(loader.construct_scalar(node)))
    return CoreLoader


def _load_yaml(name: str, text: str) -> list[Document]:
    import yaml

    loader_class = _yaml_loader()
    try:
        nodes = list(yaml.compose_all(text, Loader=loader_class))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DocumentError(name, f"not valid YAML: {exc.problem or exc.context}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise DocumentError(name, f"not valid YAML: {exc}") from None
    documents = []
    for node in nodes:
        if node is None:
            continue
        loader = loader_class("")
        try:
            data = loader.construct_document(node)
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            raise DocumentError(name, f"not valid YAML: {exc.problem}", mark.line + 1 if mark else None) from None
        finally:
            loader.dispose()
        lines: dict[tuple, int] = {}
        _yaml_lines(node, (), lines)
        documents.append(Document(name, data, lines, yaml=True))
    if not documents:
        raise DocumentError(name, "the file holds no document")
    for number, document in enumerate(documents, 1):
        document.number, document.count = number, len(documents)
    return documents


def _yaml_lines(root, path: tuple, lines: dict) -> None:
    import yaml

    pending = [(root, path)]
    while pending:
        node, path = pending.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = path + (key_node.value,)
                lines[child] = key_node.start_mark.line + 1
                pending.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                pending.append((item, path + (index,)))


# ---- both -------------------------------------------------------------------------------------
def _check_json_values(document: Document) -> None:
    """Only what JSON can say: string keys, no dates, sets, binary, NaN or infinity."""
    pending = [(document.data, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    _not_json(document, path, f"the key {key!r} is not a string; quote it")
                pending.append((item, path + (key,)))
        elif isinstance(value, list):
            pending.extend((item, path + (index,)) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            _not_json(document, path, f"{value} is not a JSON number")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            _not_json(document, path, f"a {type(value).__name__} value has no JSON form; write it as a string")


def _not_json(document: Document, path: tuple, message: str) -> None:
    raise DocumentError(document.file, message, document.lines.get(path, 1))


def dump(data: Any, as_yaml: bool) -> str:
    """A definition as the CLI writes it: JSON indented by 2, or block-style YAML in document order."""
    if not as_yaml:
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
