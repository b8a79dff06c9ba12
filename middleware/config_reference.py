"""The configuration reference (docs/config.md) and the JSON Schema, both generated from the settings schema.

Nothing here is written by hand: names, types, ranges, choices, defaults, descriptions and markers
come from the dataclasses in `settings.py`. Regenerate the reference with `ig-gate config reference >
docs/config.md` (a test fails while it is stale).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import msgspec.inspect as mi

from ig_gate.middleware.config_engine import LIST_TYPES, fields_of, key_text, path_kind, unwrap
from ig_gate.middleware.settings import ENV_PREFIX, Settings

REGENERATE = "ig-gate config reference > docs/config.md"
_WORDS = {
    mi.IntType: "integer",
    mi.FloatType: "number",
    mi.StrType: "string",
    mi.BoolType: "boolean",
    mi.NoneType: "null",
}
_PATH_NOTES = {"file": "file: must exist", "path": "path"}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
INTRO = f"""# Configuration reference

<!-- generated from middleware/settings.py by `{REGENERATE}`; do not edit -->

ig-gate reads one YAML file (`ig-gate serve --config FILE`, `ZeroTrustMiddleware(app, config=FILE)`),
then environment variables, then command-line options; each later source wins. Every setting has a
default that works for the demo. Check a file with `ig-gate config check FILE` (exit 0 and a summary,
or exit 2 with one line naming the key, the file, line and column); `ig-gate config schema` prints a
JSON Schema for editors (e.g. `# yaml-language-server: $schema=ig-gate.schema.json` on the first line).

- **Unknown keys are errors**, named by their key path (`identity.colour: unknown setting`); a value
  of the wrong type, outside its range or not among its choices is refused the same way
  (`ig-gate.yaml:5:9: memo.size: must be >= 1, got -5`).
- **Environment variables**: `{ENV_PREFIX}<SECTION>__<KEY>` sets `section.key`
  (`{ENV_PREFIX}IDENTITY__STEPUP__MAX_AGE=60`), and a top-level key is set by its own name
  (`{ENV_PREFIX}FAILURE_MODE=open`). A `{ENV_PREFIX}*` name containing `__` that is not a setting is an
  error naming the variable (`{ENV_PREFIX}BUNDEL__PATH: unknown setting (did you mean
  {ENV_PREFIX}BUNDLE__PATH?)`); other `{ENV_PREFIX}*` names without `__` belong to other parts of
  ig-gate and are ignored (`{ENV_PREFIX}REGISTRY_USERNAME`, `{ENV_PREFIX}REGISTRY_PASSWORD`). Text
  settings take the value verbatim; the others are parsed as YAML (`[10.0.0.0/8, 192.168.0.0/16]`,
  `60`, `true`); a bare value for a list is a one-item list; an empty value is null.
- **Paths**: relative paths in the YAML file are relative to the file's directory. A key marked
  *file* must name an existing file when set (checked at `ig-gate serve` startup and by `config check`;
  URLs are not fetched then); a key marked *path* may name something that does not exist yet.
- **Sidecar only**: sections and keys so marked are read by `ig-gate serve` alone; the middleware
  ignores them.
"""


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an ig-gate YAML file; sections named by their key path."""
    schema = msgspec.json.schema(Settings)
    defs = schema["$defs"]
    names: dict[str, str] = {}
    root = _name_sections(defs, schema["$ref"], "", names)
    renamed = {names[old]: node for old, node in defs.items() if old in names}
    result = {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": renamed}
    return _rewrite_refs(result, names)


def _name_sections(defs: dict[str, Any], ref: str, key: str, names: dict[str, str]) -> dict[str, Any]:
    """Record the key path (`identity.stepup`, `tenants.<name>`, `autoscale.events[]`) of each section's
    definition and title it so."""
    old = ref.rsplit("/", 1)[-1]
    node = defs[old]
    node["title"] = key or "ig-gate configuration"
    node["additionalProperties"] = False  # unknown keys are errors, in the editor as at load
    if key:
        names[old] = key
    for name, prop in node.get("properties", {}).items():
        for inner, suffix in _refs(prop, ""):
            _name_sections(defs, inner, f"{key}.{name}{suffix}" if key else f"{name}{suffix}", names)
    return node


def _refs(node: Any, suffix: str) -> Any:
    """($ref, key suffix) in a property's schema: `.<name>` inside a mapping's values, `[]` in a list's."""
    if isinstance(node, list):
        for item in node:
            yield from _refs(item, suffix)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v, suffix
            else:
                yield from _refs(v, suffix + {"additionalProperties": ".<name>", "items": "[]"}.get(k, ""))


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: f"#/$defs/{names[v.rsplit('/', 1)[-1]]}" if k == "$ref" else _rewrite_refs(v, names)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(item, names) for item in node]
    return node


def markdown() -> str:
    """docs/config.md: the intro, then one table per section (top-level keys first)."""
    root = msgspec.inspect.type_info(Settings)
    parts = [INTRO, _section(root, (), "Top-level keys", Settings.__doc__ or "", sidecar=False, env=True)]
    parts += list(_sections(root, ()))
    return "\n".join(parts)


def _sections(t: mi.Type, key: tuple[str, ...], *, env: bool = True) -> Any:
    """Each section below `t`: sub-sections, and the sections inside mappings (`tenants.<name>`) and lists
    (`autoscale.events[]`), which have no environment variables of their own."""
    for name, f in fields_of(t).items():
        base, extra, schema = unwrap(f.type)
        if fields_of(f.type):
            inner, where, own_env = f.type, (*key, name), env
        elif isinstance(base, mi.DictType) and fields_of(base.value_type):
            inner, where, own_env = base.value_type, (*key, name, "<name>"), False
        elif isinstance(base, LIST_TYPES) and fields_of(base.item_type):
            inner, where, own_env = base.item_type, (*key, f"{name}[]"), False
        else:
            continue
        doc = (schema.get("description") if inner is f.type else None) or unwrap(inner)[0].cls.__doc__ or ""
        sidecar = bool(extra.get("sidecar_only"))
        yield _section(inner, where, f"`{key_text(where)}`", doc, sidecar=sidecar, env=own_env)
        yield from _sections(inner, where, env=own_env)


def _section(t: mi.Type, key: tuple[str, ...], title: str, doc: str, *, sidecar: bool, env: bool) -> str:
    lines = [f"## {title}" + (" (sidecar only)" if sidecar else ""), "", " ".join(doc.split()), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, f in fields_of(t).items():
        if fields_of(f.type):
            continue
        _, extra, schema = unwrap(f.type)
        variable = f"<br>`{ENV_PREFIX}{'__'.join((*key, name)).upper()}`" if env else ""
        notes = [_PATH_NOTES[kind] for kind in (path_kind(f),) if kind]
        notes += ["sidecar only"] if extra.get("sidecar_only") else []
        marks = "".join(f" *({n})*" for n in notes)
        description = _cell(schema.get("description", ""))
        lines.append(
            f"| `{name}`{variable} | {_cell(type_label(f.type))} | {_default(f)} | {description}{marks} |"
        )
    return "\n".join(lines) + "\n"


def type_label(t: mi.Type) -> str:
    """A type as the reference shows it: `integer (>= 1)`, `'closed' or 'open'`, `list of string`."""
    base = unwrap(t)[0]
    if isinstance(base, mi.UnionType):
        return " or ".join(type_label(u) for u in base.types)
    if isinstance(base, mi.LiteralType):
        return " or ".join(f"'{v}'" for v in base.values)
    bounds = [f"{word} {limit}" for attr, word in _BOUNDS if (limit := getattr(base, attr, None)) is not None]
    if isinstance(base, LIST_TYPES):
        label = f"list of {type_label(base.item_type)}"
        bounds = [f"at least {base.min_length}"] if base.min_length else []
    elif isinstance(base, mi.DictType):
        label = f"mapping of {type_label(base.key_type)} to {type_label(base.value_type)}"
    elif isinstance(base, mi.StrType) and base.min_length == 1:
        label, bounds = "non-empty string", []
    elif isinstance(base, mi.DataclassType):
        label = "section (below)"
    else:
        label = _WORDS.get(type(base), "value")
    return f"{label} ({', '.join(bounds)})" if bounds else label


def _default(f: mi.Field) -> str:
    if f.required:
        return "required"
    value = f.default if f.default_factory is mi.NODEFAULT else f.default_factory()
    return f"`{json.dumps(msgspec.to_builtins(value))}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
