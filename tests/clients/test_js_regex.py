"""Regular expressions of features in JavaScript: the export's translation (``export_parts.js_regex``)
finds a match in Node exactly where Python's ``re`` (``re.ASCII``, the scalar form) finds one."""

from __future__ import annotations

import json
import re

import pytest

from closedloop.context.features.regex import _translate_regex
from closedloop.errors import SpecError
from closedloop.runtime.export_parts import js_regex
from support.node_runtime import run_node

PATTERNS = [
    r"^[a-z][a-z0-9+.\-]*://\d{1,3}(\.\d{1,3}){3}(:\d+)?(/|$)",
    r"(login|signin|verify)", r"a.b", r"^.{3}$", r"[^a]{2}", r"x{2,}", r"x{,2}y", r"a{", r"}b", r"[]a]", r"[^]a]",
    r"\bword\b", r"\W+\d", r"[\w.\-]+@[\w\-]+\.com$", r"(?:ab|cd)+$", r"\$\d+\.\d\d", r"[a\-z]", r"é+", r"日本",
    r"\B\d\B", r"[\[\]]", r"\/\:\@\#", r"^$", r"a|$", r"[.]", r"\.\*\+\?\(\)\{\}\|\^", r"[a-c]{2}\d?",
]
TEXTS = [
    "", "a", "ab", "abc", "a\nb", "a\rb", "a\u2028b", "axb", "xx", "y", "xy", "xxy", "a{", "}b", "]", "a]", "b",
    "word", "a word here", "swordfish", "x9", "$12.34", "-", "z", "éé", "日本語", "😀😀😀", "a😀", "😀", "K", "İ", "ſ",
    "\x0b", "1a2", "ab cd", "abcd", "[", "/:@#", ".", "a.b", ".*+?(){}|^", "ac1", "http://10.0.0.1/", "ftp://1.2.3.4:80",
    "HTTP://10.0.0.1", "x@y.com", "x@y.com\n", "login", "LOGIN", "abab", "ab\n", "k_9@k-9.com",
]

CHECK = """
const [patterns, texts] = JSON.parse(process.argv[1]);
const out = patterns.map((p) => { const re = new RegExp(p, "u"); return texts.map((t) => re.test(t)); });
console.log(JSON.stringify(out));
"""


def test_translated_patterns_match_where_python_matches() -> None:
    js = [js_regex(p) for p in PATTERNS]
    got = json.loads(run_node("--input-type=module", "-e", CHECK, json.dumps([js, TEXTS])))
    for p, j, row in zip(PATTERNS, js, got, strict=True):
        search = re.compile(_translate_regex(p), re.ASCII).search
        want = [search(t) is not None for t in TEXTS]
        diff = [t for t, a, b in zip(TEXTS, row, want, strict=True) if a != b]
        assert not diff, f"{p!r} (JavaScript {j!r}) differs from Python on {diff!r}"


def test_patterns_outside_the_portable_subset_are_refused() -> None:
    with pytest.raises(SpecError, match="look-arounds"):
        js_regex(r"(?=a)b")
    with pytest.raises(SpecError, match=r"\\s"):
        js_regex(r"a\sb")
