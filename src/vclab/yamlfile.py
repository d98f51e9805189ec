"""YAML files with positions: every problem points at the line and column of the key to blame.

ruamel.yaml keeps the position of every key and value; pydantic reports the path of each error;
this module joins the two. Used for cluster files and experiment files alike."""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vclab.errors import ConfigError, Problem, shown

M = TypeVar("M", bound=BaseModel)


# Limits of what vclab reads. The shipped files are under 3 KB; 128 KiB holds a cluster of
# hundreds of servers, more than one machine can emulate. ruamel's pure-Python parser reads
# ~60-100 KB per second on a busy 2-core machine, so the limit also keeps any answer within
# about two seconds.
MAX_BYTES = 128 * 1024
MAX_VALUES = 20_000  # scalars, mappings and lists, counting each alias as what it repeats
MAX_DEPTH = 32  # mappings and lists inside each other; a cluster file needs 6
# Plain YAML only: an explicit tag from this list is allowed (`!!str 10`), any other is refused.
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}": t for t in ("str", "int", "float", "bool", "null", "map",
                                                    "seq", "merge")}
_KERNEL_DIRS = ("/proc/", "/sys/", "/dev/")


def _kind_of_file(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def read_text(path: Path | str) -> str:
    """The text of a cluster or experiment file: a regular file of at most MAX_BYTES in UTF-8.
    Anything else (a directory, FIFO, /dev/zero, /proc/meminfo, a symlink loop) is refused
    without reading it, with what it is."""
    path = str(path)

    def refuse(why: str, line: int | None = None, col: int | None = None) -> ConfigError:
        return ConfigError([Problem(why, path, line, col)])

    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as e:  # ELOOP (a symlink loop), ENOENT, EACCES, a NUL byte
        loop = " (a loop of symbolic links)" if getattr(e, "errno", None) == errno.ELOOP else ""
        raise refuse(f"cannot read the file: {getattr(e, 'strerror', None) or e}{loop}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refuse(f"cannot read the file: it is {_kind_of_file(info.st_mode)}; vclab reads "
                         "cluster and experiment files, which are regular files")
        real = os.path.realpath(path)
        if real.startswith(_KERNEL_DIRS):
            raise refuse(f"cannot read the file: {real} is a file the kernel makes up as it is "
                         "read, not a cluster or experiment file")
        if info.st_size > MAX_BYTES:
            raise refuse(f"the file is {info.st_size:,} bytes; vclab reads files of at most "
                         f"{MAX_BYTES:,} bytes (the biggest cluster it can build needs ~100 KB)")
        try:
            raw = os.read(fd, MAX_BYTES + 1)
        except OSError as e:
            raise refuse(f"cannot read the file: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:  # it grew since fstat
        raise refuse(f"the file is more than {MAX_BYTES:,} bytes; vclab reads files of at most that")
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise refuse(f"not a text file (UTF-8): byte {raw[e.start:e.start + 1]!r} here", line, col) from None


def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """Parse YAML keeping positions, within the limits above; syntax errors, duplicate keys,
    tags and limits become a ConfigError with the line."""
    path = str(path)
    if text is None:
        text = read_text(path)
    if len(text) > MAX_BYTES:
        raise ConfigError([Problem(f"the text is {len(text):,} characters; vclab reads at most "
                                   f"{MAX_BYTES:,}", path)])
    if "\x00" in text:
        at = text.index("\x00")
        line = text.count("\n", 0, at) + 1
        raise ConfigError([Problem("not a text file: a NUL byte here (a binary file?)", path, line,
                                   at - (text.rfind("\n", 0, at) + 1) + 1)])
    _check_flow_depth(text, path)
    yaml = _yaml()
    try:
        data = yaml.load(text)
    except DuplicateKeyError as e:
        raise ConfigError(_duplicate_keys(text, path) or [_marked(e, path)]) from None
    except MarkedYAMLError as e:
        raise ConfigError([_marked(e, path)]) from None
    except ReaderError as e:  # a control character: the reader knows where, by character
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise ConfigError([Problem(f"character {e.character!r} is not allowed in YAML", path, line, col)]) from None
    except RecursionError:  # MAX_DEPTH keeps the composer far from this; a last guard
        raise ConfigError([Problem(f"not valid YAML: nested deeper than {MAX_DEPTH} levels", path)]) from None
    except Exception as e:  # ruamel raises a few unmarked errors
        raise ConfigError([Problem(f"not valid YAML: {shown(' '.join(str(e).split()), 300)}", path)]) from None
    return data


def _check_flow_depth(text: str, path: str) -> None:
    """Refuse `[[[[...` past MAX_DEPTH before ruamel sees it: its scanner looks for a possible
    key at every open bracket, which takes time quadratic in the depth (5,000 brackets: 2 s)
    before the composer could count levels. Linear; skips quoted text and comments."""
    depth, quote, line, line_start, prev = 0, "", 1, 0, "\n"
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
        if quote:
            if ch == "\\" and quote == '"':
                i += 1  # an escaped character, perhaps a quote
            elif ch == quote:
                quote = ""
        elif ch == "#" and prev in " \t\n":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch in "[{" and prev in " \t\n[{,:-?":
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError([Problem(f"mappings and lists are nested more than {MAX_DEPTH} deep "
                                           f"here; vclab reads at most {MAX_DEPTH}", path, line,
                                           i - line_start + 1)])
        elif ch in "]}" and depth:
            depth -= 1
        prev = ch
        i += 1


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _PlacedConstructor
    yaml.allow_duplicate_keys = False
    return yaml


class _BoundedComposer(Composer):
    """ruamel's composer with vclab's limits, checked as the document is read, so an alias bomb
    or a deep nest is refused at the line where it crosses the limit, before anything grows:
    depth, number of values with aliases expanded, an anchor used inside itself, an anchor given
    twice, and tags other than plain YAML's."""

    def compose_document(self: Any) -> Any:
        self._values = 0
        self._open: set[str] = set()  # anchors whose node is still being read
        self._expanded: dict[int, int] = {}  # id(anchored node) -> values it stands for
        self._nesting = 0
        return super().compose_document()

    def _fail(self, message: str, mark: Any) -> None:
        raise ComposerError(None, None, message, mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                self._fail(f"alias *{shown(event.anchor)[1:-1]} is inside its own anchor: the value "
                           "would contain itself forever", event.start_mark)
            node = super().compose_node(parent, index)
            self._values += self._expanded.get(id(node), 1)
            if self._values > MAX_VALUES:
                self._fail(f"with its aliases expanded the document holds more than {MAX_VALUES:,} "
                           f"values; this alias *{shown(event.anchor)[1:-1]} crosses that limit "
                           "(aliases of aliases multiply)", event.start_mark)
            return node
        self._values += 1
        if self._values > MAX_VALUES:
            self._fail(f"the document holds more than {MAX_VALUES:,} values; vclab reads at most "
                       "that many", event.start_mark)
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            self._nesting += 1
            if self._nesting > MAX_DEPTH:
                self._fail(f"mappings and lists are nested more than {MAX_DEPTH} deep here; "
                           f"vclab reads at most {MAX_DEPTH}", event.start_mark)
        tag = getattr(event, "ctag", None)
        if tag is not None and str(tag) != "!" and str(tag) not in PLAIN_TAGS:
            shown_tag = str(tag).replace("tag:yaml.org,2002:", "!!")
            self._fail(f"tag {shown(shown_tag)[1:-1]} is not allowed: vclab files are plain YAML "
                       f"(the only tags allowed are !!{', !!'.join(PLAIN_TAGS.values())})",
                       event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            if anchor in self.anchors:
                first = self.anchors[anchor].start_mark
                self._fail(f"anchor &{shown(anchor)[1:-1]} is given twice; the first is on line "
                           f"{first.line + 1}", event.start_mark)
            self._open.add(anchor)
        before = self._values
        node = super().compose_node(parent, index)
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            self._nesting -= 1
        if anchor is not None:
            self._open.discard(anchor)
            self._expanded[id(node)] = self._values - before + 1
        return node


class _PlacedConstructor(RoundTripConstructor):
    """Gives a position to the errors ruamel raises bare while building a value (`!!int abc`)."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except MarkedYAMLError:
            raise
        except Exception as e:
            kind = PLAIN_TAGS.get(str(node.tag))
            if isinstance(node, ScalarNode) and kind is not None:
                # `!!int abc`: say what the tag asks for, not Python's "invalid literal for int()"
                what = {"int": "a whole number", "float": "a number", "bool": "true or false",
                        "null": "null"}.get(kind, kind)
                raise ConstructorError(None, None, f"{shown(node.value)} is not {what}, which its "
                                       f"tag !!{kind} asks for", node.start_mark) from None
            raise ConstructorError(None, None, f"cannot read this value ({type(e).__name__}: "
                                   f"{shown(str(e), 200)})", node.start_mark) from None

    def construct_mapping(self, node: Any, maptyp: Any, deep: bool = False) -> Any:
        try:
            return super().construct_mapping(node, maptyp, deep)
        except MarkedYAMLError:
            raise
        except Exception as e:
            raise ConstructorError(None, None, f"cannot read this mapping ({type(e).__name__}: {e})",
                                   node.start_mark) from None

    def check_mapping_key(self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any) -> bool:
        try:
            return super().check_mapping_key(node, key_node, mapping, key, value)
        except TypeError:  # a key that is itself a mapping of mappings cannot be hashed
            raise ConstructorError(None, None, "a key must be a name, not a mapping or a list",
                                   key_node.start_mark) from None


def _marked(e: MarkedYAMLError, path: str) -> Problem:
    mark = e.problem_mark or e.context_mark
    msg = " ".join(str(x) for x in (e.context, e.problem) if x)
    start = e.context_mark
    if start is not None and mark is not None and start.line != mark.line:
        # The parser notices late (an unclosed `{` shows on the next line): say where it began.
        msg += f" (what is unfinished began on line {start.line + 1}, column {start.column + 1})"
    return Problem(msg.strip(), path, mark.line + 1 if mark else None, mark.column + 1 if mark else None)


def _duplicate_keys(text: str, path: str) -> list[Problem]:
    """Every key given twice in one mapping, with its field path; ruamel stops at the first."""
    try:
        root = _yaml().compose(text)
    except Exception:
        return []
    out: list[Problem] = []
    visited: set[int] = set()

    def walk(node: Node | None, loc: tuple) -> None:
        if node is None or id(node) in visited:  # an alias: its anchor was walked already
            return
        visited.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[tuple, int] = {}
            for knode, vnode in node.value:
                key = (knode.tag, knode.value) if isinstance(knode, ScalarNode) else (None, id(knode))
                name = knode.value if isinstance(knode, ScalarNode) else "?"
                if key in first and knode.tag != "tag:yaml.org,2002:merge":
                    out.append(Problem(f"key {shown(name)} is given twice; the first is on line {first[key]}",
                                       path, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                       _field_path(loc + (name,))))
                first.setdefault(key, knode.start_mark.line + 1)
                walk(vnode, loc + (name,))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, loc + (i,))

    walk(root, ())
    return out


def _child(node: Any, part: Any) -> tuple[bool, Any]:
    """The key of `node` that `part` names: pydantic writes non-string keys as text (None -> 'None')."""
    if isinstance(node, dict):
        if part in node:
            return True, part
        for key in node:
            if str(key) == str(part):
                return True, key
    elif isinstance(node, list) and isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(node):
        return True, part
    return False, None


def position(data: Any, loc: tuple) -> tuple[int | None, int | None]:
    """1-based line and column of the deepest node of `loc` that exists in the document."""
    line = col = None
    node = data
    for part in loc:
        found, key = _child(node, part)
        if not found and isinstance(node, CommentedSeq) and isinstance(part, str):
            continue  # a short form (`[tor-a, tor-b]` for `between: [...]`): the list is the field
        if not found or not isinstance(node, (CommentedMap, CommentedSeq)):
            break
        try:
            line, col = node.lc.key(key) if isinstance(node, CommentedMap) else node.lc.item(key)
        except (KeyError, TypeError, AttributeError):
            pass  # a key merged in with `<<:` has no position of its own here
        node = node[key]
    if line is None and hasattr(data, "lc"):
        line, col = data.lc.line, data.lc.col
    return (line + 1 if line is not None else None, col + 1 if col is not None else None)


def _field_path(loc: tuple) -> str:
    # A key with blanks or control characters is quoted, so a problem stays one honest line.
    return ".".join(repr(k) if isinstance(k, str) and (not k or not k.isprintable() or any(c.isspace() for c in k))
                    else str(k) for k in loc)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys the model at `loc` accepts, to list them when an unknown key is met."""
    current: Any = model
    for key in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(key) if isinstance(key, str) else None
            if field is None:
                return None
            current = field.annotation
        else:
            current = _inner_model(current)
            if current is None:
                return None
            if isinstance(key, str) and key in current.model_fields:
                current = current.model_fields[key].annotation
    current = _inner_model(current) if not (isinstance(current, type) and issubclass(current, BaseModel)) else current
    return list(current.model_fields) if current is not None else None


def _inner_model(tp: Any) -> type[BaseModel] | None:
    """The model inside Optional[...], dict[str, Model], list[Model], Annotated[...]."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    meta = getattr(tp, "__origin__", None)
    if meta is not None and isinstance(meta, type) and issubclass(meta, BaseModel):
        return meta
    return None


def _clean_loc(loc: tuple, data: Any, missing: bool = False) -> tuple:
    """The path as the user wrote it: pydantic adds union-member tags ("tuple[str, str]",
    "Link", "function-after[...]") and "[key]" markers that are not in the document."""
    out = []
    node = data
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        last = missing and i == len(loc) - 1
        found, key = _child(node, part)
        if found:
            node = node[key]
        elif not last and isinstance(part, str):
            continue
        else:
            node = None
        out.append(part)
    return tuple(out)


def _message(err: dict, model: type[BaseModel], loc: tuple) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        return f"unknown key {shown(loc[-1])}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return f"item {loc[-1] + 1} is missing" if loc and isinstance(loc[-1], int) else "this key is required"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{shown(err.get('input'))} is not allowed; expected {expected if len(expected) <= 300 else expected[:300] + '...'}"
    if kind in ("model_type", "dict_type"):
        return f"expected a mapping of keys (or the short form), got {shown(err.get('input'))}"
    if ("[key]" in err["loc"] and kind == "string_type") or kind == "invalid_key":
        return f"{shown(err.get('input'))} cannot be a name here: write a name as text"
    if kind == "ip_v4_network":
        return (f"{shown(err.get('input'))} is not an IPv4 network; write ADDRESS/PREFIX with the host "
                "bits zero, e.g. 10.10.0.0/24")
    value = err.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        # NaN fails `ge` before `allow_inf_nan` is asked: say what is wrong with it.
        return f"Input should be a finite number (got {value!r})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind.endswith("_type") or kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal",
                                          "multiple_of", "finite_number"):
        msg = f"{msg} (got {shown(err.get('input'))})"
    return msg


def validate(model: type[M], data: Any, path: str,
             semantic: Callable[[M], list[tuple[tuple, str]]] | None = None) -> M:
    """Validate a parsed document against `model`, then the whole-file rules, reporting all."""
    if not isinstance(data, dict):
        raise ConfigError([Problem("the file must be a mapping of keys (e.g. `cluster: NAME`)", path, 1, 1)])
    try:
        obj = model.model_validate(_plain(data))
    except ValidationError as e:
        problems = []
        seen = set()
        for err in e.errors():
            loc = _clean_loc(err["loc"], data, err["type"] == "missing")
            text = _message(err, model, loc)
            if (loc, text) in seen:
                continue
            seen.add((loc, text))
            line, col = position(data, loc)
            problems.append(Problem(text, path, line, col, _field_path(loc)))
        raise ConfigError(_in_file_order(_drop_union_noise(problems))) from None
    if semantic is not None:
        found = semantic(obj)
        if found:
            problems = []
            for loc, text in found:
                line, col = position(data, loc)
                problems.append(Problem(text, path, line, col, _field_path(tuple(k for k in loc if k is not None))))
            raise ConfigError(_in_file_order(problems))
    return obj


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    # Read like a compiler's output: top to bottom, so fixing one does not move the next.
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _drop_union_noise(problems: list[Problem]) -> list[Problem]:
    # A union (short or long form) reports one failure per member: keep one per field and line.
    out, seen = [], set()
    for p in problems:
        key = (p.field, p.line)
        if key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def load_model(model: type[M], path: Path | str,
               semantic: Callable[[M], list[tuple[tuple, str]]] | None = None) -> M:
    return validate(model, load_yaml(path), str(path), semantic)
