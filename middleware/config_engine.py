"""The configuration engine behind `settings.py`: a schema of dataclasses, validated by msgspec.

Given the schema (frozen dataclasses whose fields carry `Annotated[..., msgspec.Meta(...)]` types),
this module reads a YAML file keeping each value's line and column, applies `IG_GATE_*` overrides,
refuses unknown keys, converts with `msgspec.convert` (types, literal choices, ranges, `__post_init__`
checks) and turns every failure into a `ConfigError` that names the key path and where the value was
set (`ig-gate.yaml:3:9: memo.size: must be >= 1, got -5`, `IG_GATE_MEMO__SIZE: memo.size: ...`).
It knows nothing of the particular settings.

Environment rule: a variable `IG_GATE_<NAME>` is a setting when NAME contains `__`
(`IG_GATE_IDENTITY__STEPUP__MAX_AGE`) or is a top-level key (`IG_GATE_FAILURE_MODE`); then it must
name a real key, or it is an error naming the variable. Every other `IG_GATE_*` variable
(`IG_GATE_REGISTRY_USERNAME`, ...) belongs to someone else and is ignored.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import yaml

from ig_gate.errors import IgGateError

Key = tuple[str | int, ...]
"""A key path: ("identity", "stepup", "max_age"), ("geo", "trusted_proxies", 1)."""

_AT = re.compile(r"^(?P<message>.*) - at (?P<in_key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")
_REQUIRED = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_TYPE_MISMATCH = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")
_CONSTRAINT = re.compile(r"^Expected `[^`]+` (?P<rule>.+)$")
_OWN_CHECK = re.compile(r"^(?P<field>\w+)(?P<indices>(?:\[\d+\])*): (?P<rest>.+)$", re.DOTALL)
_WORDS = {
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.StrType: "a string",
    mi.BoolType: "true or false",
    mi.NoneType: "null",
    mi.VarTupleType: "a list",
    mi.ListType: "a list",
    mi.SetType: "a list",
    mi.FrozenSetType: "a list",
    mi.DictType: "a mapping",
    mi.DataclassType: "a mapping",
}
LIST_TYPES = (mi.VarTupleType, mi.ListType, mi.SetType, mi.FrozenSetType)


class ConfigError(IgGateError, ValueError):
    """A setting is unknown or has a bad value; the message names the key path and where it was set."""

    code = "config"
    label = "configuration error"


def key_text(key: Key) -> str:
    """`identity.algorithms[1]` for ("identity", "algorithms", 1)."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def unwrap(t: mi.Type) -> tuple[mi.Type, dict[str, Any], dict[str, Any]]:
    """The type under any `Meta` annotations, with their merged `extra` and JSON-schema extras."""
    extra: dict[str, Any] = {}
    schema: dict[str, Any] = {}
    while isinstance(t, mi.Metadata):
        extra |= t.extra or {}
        schema |= t.extra_json_schema or {}
        t = t.type
    return t, extra, schema


def fields_of(t: mi.Type) -> dict[str, mi.Field]:
    """The fields of a section (a dataclass type), by name; {} for anything else."""
    base = unwrap(t)[0]
    return {f.name: f for f in base.fields} if isinstance(base, mi.DataclassType) else {}


def leaves(t: mi.Type, prefix: Key = ()) -> Iterator[tuple[Key, mi.Field]]:
    """Every setting that is not a section, depth first in schema order."""
    for name, f in fields_of(t).items():
        if fields_of(f.type):
            yield from leaves(f.type, (*prefix, name))
        else:
            yield (*prefix, name), f


def type_at(root: mi.Type, key: Key) -> mi.Type | None:
    """The schema type at a key path (list items by index), or None when there is no such key."""
    t: mi.Type | None = root
    for part in key:
        base = unwrap(t)[0] if t is not None else None
        if isinstance(base, mi.UnionType):
            base = next((unwrap(u)[0] for u in base.types if not isinstance(u, mi.NoneType)), None)
        if isinstance(part, int):
            t = base.item_type if isinstance(base, LIST_TYPES) else None
        elif isinstance(base, mi.DictType):
            t = base.value_type
        else:
            f = fields_of(base).get(part) if base is not None else None
            t = f.type if f is not None else None
    return t


def describe(t: mi.Type) -> str:
    """What a value of this type is, in words: "an integer", "a string or null", "'open' or 'closed'"."""
    base = unwrap(t)[0]
    members = [unwrap(u)[0] for u in base.types] if isinstance(base, mi.UnionType) else [base]
    if any(isinstance(m, mi.LiteralType) for m in members):  # one list of choices, null among them
        values = [v for m in members for v in (m.values if isinstance(m, mi.LiteralType) else (None,))]
        return choices(tuple(values))
    return " or ".join(_WORDS.get(type(m), "a value") for m in members)


def choices(values: tuple[Any, ...]) -> str:
    shown = [show(v) for v in values]
    return " or ".join(shown) if len(shown) <= 2 else f"one of {', '.join(shown[:-1])} or {shown[-1]}"


def show(value: Any) -> str:
    """A value as a YAML user would write it (no Python type names)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "[]"
    return repr(value)


class Sources:
    """Where each value was set: `file:line:col` of YAML values and keys, or an env variable's name."""

    def __init__(self) -> None:
        self.values: dict[Key, str] = {}
        self.keys: dict[Key, str] = {}

    def of(self, key: Key, *, as_key: bool = False) -> str | None:
        """The place that set `key` (or the nearest enclosing value that did)."""
        if as_key and key in self.keys:
            return self.keys[key]
        for end in range(len(key), -1, -1):
            if key[:end] in self.values:
                return self.values[key[:end]]
        return None

    def error(self, key: Key, text: str, *, as_key: bool = False) -> ConfigError:
        where = self.of(key, as_key=as_key)
        message = f"{key_text(key) or 'config'}: {text}"
        return ConfigError(f"{where}: {message}" if where else message)


def read_yaml(path: Path, sources: Sources) -> dict[str, Any]:
    """The mapping in a YAML file, recording each key's and value's `file:line:col` in `sources`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _marks(node, (), path, sources)
    return data


def _marks(node: yaml.Node, key: Key, path: Path, sources: Sources) -> None:
    def at(n: yaml.Node) -> str:
        return f"{path}:{n.start_mark.line + 1}:{n.start_mark.column + 1}"

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*key, key_node.value)
            if child in sources.keys:
                first = sources.keys[child]
                raise ConfigError(f"{at(key_node)}: {key_text(child)}: set twice (first at {first})")
            sources.keys[child] = at(key_node)
            sources.values[child] = at(value_node)
            _marks(value_node, child, path, sources)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sources.values[(*key, index)] = at(item)
            _marks(item, (*key, index), path, sources)


def env_overrides(
    env: Mapping[str, str], prefix: str, root: mi.Type
) -> Iterator[tuple[Key, Any, str]]:
    """(key path, value, variable name) for each `prefix*` variable that is a setting (module docstring).

    Values are taken verbatim for text settings and parsed as YAML for the others
    (`[10.0.0.0/8]`, `60`, `true`); a bare value for a list setting is a one-item list; empty is null.
    """
    top = {name for name, f in fields_of(root).items() if not fields_of(f.type)}
    for name in sorted(env):
        rest = name[len(prefix) :].lower() if name.upper().startswith(prefix) else None
        if rest is None or ("__" not in rest and rest not in top):
            continue
        key: Key = tuple(rest.split("__"))
        t = type_at(root, key)
        if t is None or fields_of(t):
            raise ConfigError(f"{name}: {_unknown_env(name, prefix, root, t)}")
        yield key, _env_value(name, env[name], t), name


def _unknown_env(name: str, prefix: str, root: mi.Type, t: mi.Type | None) -> str:
    if t is not None:
        return f"names a section, not a setting (set one key: {name.upper()}__<KEY>)"
    known = [prefix + "__".join(map(str, key)).upper() for key, _ in leaves(root)]
    near = difflib.get_close_matches(name.upper(), known, n=1)
    return "unknown setting" + (f" (did you mean {near[0]}?)" if near else "")


def _env_value(name: str, text: str, t: mi.Type) -> Any:
    if text == "":
        return None
    base = unwrap(t)[0]
    members = base.types if isinstance(base, mi.UnionType) else (base,)
    if all(_is_text(unwrap(m)[0]) or isinstance(m, mi.NoneType) for m in members):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not a YAML value: {getattr(exc, 'problem', None) or exc}") from None
    if isinstance(base, LIST_TYPES) and not isinstance(value, list):
        value = [value]
    return value


def _is_text(t: mi.Type) -> bool:
    return isinstance(t, mi.StrType) or (
        isinstance(t, mi.LiteralType) and all(isinstance(v, str) for v in t.values)
    )


def apply(raw: dict[str, Any], key: Key, value: Any, source: str | None, sources: Sources) -> None:
    """Set `raw[key...] = value`, creating sections; `source` (if any) is recorded as where it was set."""
    node = raw
    for depth, part in enumerate(key[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}{key_text(key[: depth + 1])} is not a section")
        node = child
    node[key[-1]] = value
    sources.values[key] = source or ""  # "": set here, not in the file (no location to name)


def check_keys(raw: Any, t: mi.Type, sources: Sources, key: Key = ()) -> None:
    """Refuse keys the schema does not have (in sections, and in sections inside mappings and lists); an
    empty (null) section means its defaults."""
    base = unwrap(t)[0]
    if isinstance(base, mi.DictType) and isinstance(raw, dict):
        for name, value in raw.items():
            check_keys(value, base.value_type, sources, (*key, name))
    elif isinstance(base, LIST_TYPES) and isinstance(raw, list):
        for index, value in enumerate(raw):
            check_keys(value, base.item_type, sources, (*key, index))
    known = fields_of(t)
    if not known or not isinstance(raw, dict):
        return
    for name in list(raw):
        if name not in known:
            raise sources.error((*key, name), "unknown setting", as_key=True)
        if raw[name] is None and fields_of(known[name].type):
            raw[name] = {}
        check_keys(raw[name], known[name].type, sources, (*key, name))


def convert(raw: Mapping[str, Any], cls: type, root: mi.Type, sources: Sources) -> Any:
    """`cls` built from `raw` by msgspec; a ConfigError naming the key path when a value is refused."""
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), raw, cls, root, sources) from None


def _explain(text: str, raw: Mapping[str, Any], cls: type, root: mi.Type, sources: Sources) -> ConfigError:
    found = _AT.match(text)
    message, path = (found["message"], found["path"]) if found else (text, "")
    in_key = bool(found and found["in_key"])  # a mapping's key is refused, not its value
    key = _locate(path + "[...]" * in_key, raw, cls, text)
    if key is None:
        return ConfigError(message)
    if in_key:
        mapping = unwrap(type_at(root, key[:-1]))[0]
        return sources.error(key, f"not a valid key: must be {describe(mapping.key_type)}", as_key=True)
    t = type_at(root, key)
    value = _value_at(raw, key)
    if t is None:
        return sources.error(key, message)
    if required := _REQUIRED.match(message):
        return sources.error((*key, required["field"]), "required")
    if _TYPE_MISMATCH.match(message):
        return sources.error(key, f"expected {describe(t)}, got {show(value)}")
    if message.startswith("Invalid enum value"):
        return sources.error(key, f"must be {describe(t)}, got {show(value)}")
    if rule := _CONSTRAINT.match(message):
        wanted = "not be empty" if rule["rule"] == "of length >= 1" else f"be {rule['rule']}"
        return sources.error(key, f"must {wanted}, got {show(value)}")
    # a section's own check (__post_init__): "field: what is wrong" or "field[2]: ..." names the field
    if (own := _OWN_CHECK.match(message)) and own["field"] in fields_of(t):
        indices = tuple(int(i) for i in re.findall(r"\d+", own["indices"]))
        return sources.error((*key, own["field"], *indices), own["rest"])
    return sources.error(key, message)


def _locate(path: str, raw: Mapping[str, Any], cls: type, text: str) -> Key | None:
    """The key path of an error; mapping keys, which msgspec shows as `[...]`, are found by converting
    again with one entry of that mapping at a time (errors only: the first entry that fails the same way).
    None when it cannot be found."""
    key: Key = ()
    for name, index, hidden in _STEP.findall(path):
        if not hidden:
            key = (*key, name if name else int(index))
            continue
        mapping = _value_at(raw, key)
        if not isinstance(mapping, dict):
            return None
        for entry in mapping:
            trial = copy.deepcopy(dict(raw))
            _value_at(trial, key).clear()
            _value_at(trial, key)[entry] = mapping[entry]
            try:
                msgspec.convert(trial, cls)
            except msgspec.ValidationError as exc:
                if str(exc) == text:
                    key = (*key, entry)
                    break
        else:
            return None
    return key


def _value_at(raw: Any, key: Key) -> Any:
    for part in key:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def path_kind(f: mi.Field) -> str | None:
    """"file" (must exist at startup when set), "path" (may not exist yet) or None: the field's marker."""
    return unwrap(f.type)[1].get("path")


def resolve_paths(raw: dict[str, Any], root: mi.Type, base: Path) -> None:
    """Make the relative path values in `raw` (as read from a YAML file) relative to `base`."""
    for key, f in leaves(root):
        value = _value_at(raw, key)
        if path_kind(f) and isinstance(value, str) and value and "://" not in value:
            _value_at(raw, key[:-1])[key[-1]] = str(base / value)


def missing_files(obj: Any, root: mi.Type) -> Iterator[tuple[Key, str]]:
    """(key path, value) of each "file" setting of a built settings object whose file does not exist."""
    for key, f in leaves(root):
        value = _value_at_attr(obj, key)
        local = isinstance(value, str) and "://" not in value
        if path_kind(f) == "file" and local and not Path(value).is_file():
            yield key, value


def _value_at_attr(obj: Any, key: Key) -> Any:
    for part in key:
        obj = getattr(obj, str(part))
    return obj
