"""Where a job file writes what its checks refuse, when YAML anchors, aliases and merge keys are used.

A value reached through an alias (`sampling: *base`) or a merge key (`<<: *base`) was refused under the
key path that reaches it (`sampling.fps=-1`), a path the file does not spell: the value to fix is
written under the anchor (`defaults.fps`, line 6). A YAML error (an undefined alias, a key given
twice) named its line but not the key. Pure functions of the file's text, importing nothing of vidbatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import yaml

Path = tuple[str | int, ...]
_MERGE = "tag:yaml.org,2002:merge"


def dotted(path: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in path)


def path_at(text: str, index: int) -> str | None:
    """The key path being read at character `index` of the text (a YAML error's mark), or None."""
    frames: list[list[object]] = []  # [is_mapping, key or index, expecting a key]
    path: Path | None = None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if event.start_mark.index > index:
                break
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                frames.pop()
                _value_done(frames)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            top = frames[-1] if frames else None
            is_key = top is not None and top[0] is True and top[2] is True
            if is_key and top is not None:
                top[1], top[2] = (event.value if isinstance(event, yaml.ScalarEvent) else "?"), False
            elif top is not None and top[0] is False:
                top[1] = int(top[1]) + 1  # type: ignore[call-overload]
            path = tuple(frame[1] for frame in frames)  # type: ignore[misc]
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                frames.append([isinstance(event, yaml.MappingStartEvent), -1, True])
            elif not is_key:
                _value_done(frames)
    except yaml.YAMLError:
        pass  # the error itself: the path up to it is what is asked
    return dotted(path) if path else None


def _value_done(frames: list[list[object]]) -> None:
    if frames and frames[-1][0] is True:
        frames[-1][2] = True  # the mapping's next node is a key


class Written:
    """Where the values of a job file are written: the first place a node appears in the text is its
    anchor's (an alias can only follow its anchor), every later one an alias or a merge key's."""

    def __init__(self, text: str) -> None:
        self._first: dict[int, tuple[Path, int]] = {}  # id(node) -> (its path as written, the line of its key)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        self._root = root
        if root is not None:
            self._index(root, (), root.start_mark.line + 1)

    def _index(self, node: yaml.Node, path: Path, line: int) -> None:
        if id(node) in self._first:
            return
        self._first[id(node)] = (path, line)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                self._index(value, (*path, name), key.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                self._index(value, (*path, i), value.start_mark.line + 1)

    def elsewhere(self, loc: Sequence[str | int]) -> tuple[Path, int, int] | None:
        """For the key path `loc`, reached through an alias or a merge key: (the path and line it is written
        at, the line of the alias or merge key that reaches it last). None when written where `loc` says,
        or not found."""
        node = self._root
        via = None
        for part in loc:
            if node is None:
                return None
            found = _child(node, part)
            if found is None:
                return None
            child, step_line = found
            if self._first[id(child)][0] != (*self._first[id(node)][0], part):
                via = step_line
            node = child
        if node is None or via is None:
            return None
        path, line = self._first[id(node)]
        return path, line, via


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, int] | None:
    """The node at `part` of `node`, and the line of the key (or merge key) that leads to it."""
    if isinstance(node, yaml.SequenceNode):
        if not isinstance(part, int) or not 0 <= part < len(node.value):
            return None
        return node.value[part], node.value[part].start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.tag != _MERGE and isinstance(key, yaml.ScalarNode) and key.value == str(part):
            return value, key.start_mark.line + 1
    for key, value in node.value:  # keys written in the mapping win over those merged in, the first merged over the later
        if key.tag == _MERGE:
            for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                found = _child(merged, part)
                if found is not None:
                    return found[0], key.start_mark.line + 1
    return None
