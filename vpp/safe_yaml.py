"""YAML from outside, read within bounds: size, nodes, depth, alias expansion, and only safe tags.

PyYAML's ``safe_load`` refuses Python objects but not a *billion laughs*: nine
anchored lists of nine aliases each are 338 bytes that expand to 387 million
elements once pydantic, ``repr`` or ``json`` walks them (the daemon once spent
213 s and 2.29 GB of log on one). So every document is composed first and
measured as a tree, aliases expanded, before anything is constructed:

- the text is at most ``max_bytes`` (read with that cap: a huge file is never read whole);
- ``allow_aliases=False`` (overrides, API bodies) refuses ``*alias`` and ``<<: *alias`` outright;
- otherwise the expanded tree may hold at most ``max_nodes`` nodes, and a cycle is refused;
- no branch is deeper than ``max_depth``.

Every failure is one ``InputError`` naming the file and what was exceeded, never
another exception type. The budgets make a load take milliseconds, so callers on
the daemon's event loop may still run it in a thread, but need not fear it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from vpp.errors import InputError


@dataclass(frozen=True, slots=True)
class Budget:
    max_bytes: int = 4 * 1024 * 1024
    max_nodes: int = 1_000_000  # of the tree with every alias expanded
    max_depth: int = 64
    allow_aliases: bool = True


CONFIG = Budget()
OVERRIDES = Budget(max_bytes=1_000_000, max_nodes=100_000, max_depth=16, allow_aliases=False)


class _Refused(Exception):
    def __init__(self, what: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(what)
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases when asked to, and stops composing past the node budget."""

    budget: Budget = CONFIG

    def compose_node(self, parent: Node | None, index: object) -> Node:
        if self.check_event(yaml.AliasEvent) and not self.budget.allow_aliases:
            raise _Refused("aliases (*name) are not allowed here: write each value out", self.peek_event().start_mark)
        self._composed = getattr(self, "_composed", 0) + 1
        self._depth = getattr(self, "_depth", 0) + 1
        if self._composed > self.budget.max_nodes:
            raise _Refused(f"more than {self.budget.max_nodes} nodes", self.peek_event().start_mark)
        if self._depth > self.budget.max_depth + 1:
            raise _Refused(f"nesting deeper than {self.budget.max_depth}", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_text(path: Path, max_bytes: int) -> str:
    """At most ``max_bytes`` of a UTF-8 file, or an ``InputError``."""
    where = str(path)
    if not path.is_file():
        raise InputError(where, "file", str(path.resolve()), "an existing YAML file")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise InputError(where, "file", where, f"a readable file ({err.strerror})") from None
    if len(data) > max_bytes:
        raise InputError(where, "file", f"more than {max_bytes} bytes", f"at most {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(where, f"byte {err.start}", data[err.start : err.start + 4], "UTF-8 text") from None


def load(text: str, where: str, budget: Budget = CONFIG) -> Any:
    """The document in ``text`` (``None`` when empty), within ``budget``; ``InputError`` otherwise."""
    if len(text.encode("utf-8", "surrogatepass")) > budget.max_bytes:
        raise InputError(where, "file", f"more than {budget.max_bytes} bytes", f"at most {budget.max_bytes} bytes")
    if (line := _flow_too_deep(text, budget.max_depth)) is not None:
        raise InputError(where, f"line {line}", f"nesting deeper than {budget.max_depth}", "YAML within the input limits")
    loader = None
    try:
        loader = type("_BudgetLoader", (_Loader,), {"budget": budget})(text)  # the reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, budget)
        return loader.construct_document(node)
    except _Refused as err:
        raise InputError(where, _line(err.mark), str(err), "YAML within the input limits") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InputError(where, _line(mark), getattr(err, "problem", None) or str(err).splitlines()[0], "valid YAML") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # a constructor refusing a scalar (e.g. a 10,000-digit int)
        raise InputError(where, "file", f"{type(err).__name__}: {str(err)[:120]}", "valid YAML") from None
    finally:
        if loader is not None:
            loader.dispose()


def read(path: Path, budget: Budget = CONFIG) -> Any:
    """``load`` of a file, read with the budget's size cap."""
    return load(read_text(path, budget.max_bytes), str(path), budget)


def _flow_too_deep(text: str, max_depth: int) -> int | None:
    """The line where ``[``/``{`` nesting first passes ``max_depth``, if it does.

    PyYAML's scanner keeps a possible simple key per open flow collection and walks them all at every token,
    so n nested brackets cost O(n²) before the composer ever sees a node: 5,000 took 0.1 s, a megabyte
    would take hours. This linear pass goes first. It counts every bracket, quoted or commented ones too:
    skipping quotes or comments by a character scan can be fooled into skipping real nesting (a ``'`` in
    a plain scalar, a ``#`` inside a quoted string), and legitimate files nest two or three deep."""
    depth, line = 0, 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return line
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return None


def _measure(root: Node, budget: Budget) -> None:
    """Refuse a tree that, aliases expanded, has too many nodes, is too deep, or contains itself."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)
    open_: set[int] = set()

    def walk(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            size, height = sizes[key]
        else:
            if key in open_:
                raise _Refused("a node that contains itself", node.start_mark)
            if depth > budget.max_depth:
                raise _Refused(f"nesting deeper than {budget.max_depth}", node.start_mark)
            open_.add(key)
            size, height = 1, 0
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = node.value
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            for child in children:
                s, h = walk(child, depth + 1)
                size += s
                height = max(height, h + 1)
                if size > budget.max_nodes:
                    raise _Refused(f"more than {budget.max_nodes} nodes once aliases are expanded", node.start_mark)
            open_.discard(key)
            sizes[key] = (size, height)
        if depth + height > budget.max_depth:
            raise _Refused(f"nesting deeper than {budget.max_depth} once aliases are expanded", node.start_mark)
        return size, height

    size, _ = walk(root, 0)
    if size > budget.max_nodes:
        raise _Refused(f"more than {budget.max_nodes} nodes once aliases are expanded", root.start_mark)


def _line(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}" if mark is not None else "file"
