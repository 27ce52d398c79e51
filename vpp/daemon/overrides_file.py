"""The text ``PUT /overrides`` writes: the operator's file with its comments and layout, only the overrides changed.

The body of a PUT is the new list (JSON or YAML). Writing it as it came would
turn a commented YAML file into one line of JSON, so the current file is read
round-trip (ruamel.yaml): overrides that stay keep their own lines and comments,
withdrawn ones are deleted in place, new ones are appended in the style of the
ones already there. When the file cannot be kept (it is not a mapping with an
``overrides`` list, or the kept overrides change order, which changes which of
two conflicting ones wins), the header comments are kept and the list is
written afresh. The caller validates the result and compares it with the body,
so a merge can never change what is in force.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from vpp.overrides import Override


def merged(current_text: str, current: Sequence[Override], new_items: Sequence[dict[str, Any]], new: Sequence[Override]) -> str:
    """``current_text`` (whose overrides are ``current``, item by item) edited to hold ``new_items`` (``new``)."""
    yaml = YAML()  # round trip
    yaml.preserve_quotes = True
    try:
        doc = yaml.load(current_text)
    except Exception:  # noqa: BLE001 - an unreadable current file is simply replaced
        doc = None
    if not isinstance(doc, CommentedMap):
        return _dump(yaml, CommentedMap(overrides=_seq(new_items, flow=True)))
    seq = doc.get("overrides")
    if not isinstance(seq, CommentedSeq) or len(seq) != len(current):
        doc["overrides"] = _seq(new_items, flow=True)
        return _dump(yaml, doc)
    kept: list[int] = []  # index in the current file of each new override, or -1
    free = list(range(len(current)))
    for o in new:
        match = next((i for i in free if current[i] == o), -1)
        if match >= 0:
            free.remove(match)
        kept.append(match)
    order = [i for i in kept if i >= 0]
    first_new = next((k for k, i in enumerate(kept) if i < 0), len(kept))
    if order != sorted(order) or any(i >= 0 for i in kept[first_new:]):
        flow = bool(len(seq)) and _is_flow(seq[0])
        doc["overrides"] = _seq(new_items, flow=flow if len(seq) else True)
        return _dump(yaml, doc)
    flow = _is_flow(seq[0]) if len(seq) else True
    for i in sorted(set(range(len(current))) - set(order), reverse=True):
        del seq[i]
    for item in new_items[first_new:]:
        seq.append(_map(item, flow))
    if len(seq) == 0:
        seq.fa.set_flow_style()  # `overrides: []`
    return _dump(yaml, doc)


def _is_flow(item: Any) -> bool:
    return isinstance(item, CommentedMap) and item.fa.flow_style()


def _map(item: dict[str, Any], flow: bool) -> CommentedMap:
    m = CommentedMap(item)
    if flow:
        m.fa.set_flow_style()
    return m


def _seq(items: Sequence[dict[str, Any]], flow: bool) -> CommentedSeq:
    seq = CommentedSeq(_map(item, flow) for item in items)
    if not items:
        seq.fa.set_flow_style()
    return seq


def _dump(yaml: YAML, doc: Any) -> str:
    out = io.StringIO()
    yaml.width = 4096  # one override per line, as operators write them
    yaml.dump(doc, out)
    return out.getvalue()
