"""OPA's file hashing rule, checked against OPA's own test vectors."""

from __future__ import annotations

import pytest

from ig_gate.bundles.errors import BundleFormatError, SignatureError
from ig_gate.bundles.filehash import canonical_document, canonical_json, file_digest, load_literal_json

from .opa_vectors import FILE_HASHES


@pytest.mark.parametrize(("name", "content", "algorithm", "expected"), FILE_HASHES)
def test_reproduces_opa_file_hashes(name, content, algorithm, expected):
    assert file_digest(name.removeprefix("/"), content, algorithm) == expected


def test_numbers_are_hashed_exactly_as_written():
    assert canonical_json(load_literal_json(b'{"b": 1.50, "a": [1E5, -0, 12345678901234567890.0]}')) == (
        '{"a":[1E5,-0,12345678901234567890.0],"b":1.50}'
    )


def test_strings_keep_html_and_escape_line_separators_like_go():
    encoded = canonical_json(load_literal_json('{"s": "<a&b>\u2028\u2029\\u0001\\n\\"é"}'.encode()))
    assert encoded == '{"s":"<a&b>\\u2028\\u2029\\u0001\\n\\"é"}'


def test_keys_sort_by_code_point_at_every_level():
    assert canonical_json(load_literal_json(b'{"z": {"b": 1, "B": 2}, "a": [], "\xc3\xa9": null}')) == (
        '{"a":[],"z":{"B":2,"b":1},"é":null}'
    )


def test_only_manifest_and_data_documents_are_structured():
    pretty, compact = b'{ "a" : 1 }', b'{"a":1}'
    assert file_digest("x/data.json", pretty) == file_digest("x/data.json", compact)
    assert file_digest(".manifest", pretty) == file_digest(".manifest", compact)
    assert file_digest("x/other.json", pretty) != file_digest("x/other.json", compact)


def test_unknown_algorithm_and_bad_structured_file_are_named():
    with pytest.raises(SignatureError, match="MD6"):
        file_digest(".manifest", b"{}", "MD6")
    with pytest.raises(BundleFormatError, match=r"data.json"):
        file_digest("data.json", b"{oops")


@pytest.mark.parametrize(
    "body",
    [
        b'{"b": 1.50, "a": [1E5, -0, {"z": null, "y": "<&>\xe2\x80\xa8"}], "c": "x\\"y\\\\z", "d": 10}',
        b'{"nul": "a\\u0000b", "n": 2.50}',  # spells a NUL: the slow path
        b'{"fake": "\\\\u0000N1\\\\u0000", "n": 1}',  # a string that looks like a marked number
        b"[]",
        b'"just a string"',
    ],
)
def test_fast_and_reference_canonical_forms_agree(body):
    assert canonical_document(body) == canonical_json(load_literal_json(body)).encode()


def test_a_string_can_never_pose_as_a_number():
    assert canonical_document(b'{"v": "\\u0000" }') != canonical_document(b'{"v": 0}')
    assert file_digest("data.json", b'{"v": "\\u00001\\u0000"}') != file_digest("data.json", b'{"v": 1}')


def test_deep_nesting_is_a_named_error():
    with pytest.raises(BundleFormatError, match="cannot hash"):
        file_digest("data.json", b"[" * 100_000 + b"]" * 100_000)
