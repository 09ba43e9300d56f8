// Unit tests of the client runtime on small hand-written client forms (the parity with Python on
// exported bundles is tests/clients/test_js_parity.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { BundleError, ContextError, loadBundle, uniform } from "../../src/runtime/index.js";
import { blake2b } from "../../src/runtime/hash.js";

const hex = (/** @type {Uint8Array} */ b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** A small client form: three actions, rules over features, thresholds, a block list and a cap. */
function form(over = {}) {
  return {
    format: "closedloop.client.bundle",
    format_version: 1,
    bundle: { id: "toy-000000000001", system: "toy", schema_version: "2" },
    schema: {
      extra: "ignore",
      fields: [
        { name: "user", kind: "str", required: true, choices: null, limit: 16, rule: "a string of at most 16 characters" },
        { name: "age", kind: "float", required: false, default: 10.0, ge: 0, le: null, nonfinite: "default", rule: "a number ≥ 0" },
        { name: "n", kind: "int", required: false, default: 0, ge: 0, le: 100, rule: "an integer in [0, 100]" },
        { name: "secure", kind: "bool", required: false, default: true, rule: "true or false" },
        { name: "url", kind: "str", required: false, default: "", choices: null, limit: 8192, rule: "a string" },
        { name: "browser", kind: "str", required: false, default: "other", choices: ["chrome", "other"], limit: 8192, rule: "one of ['chrome', 'other']" },
      ],
    },
    unit: "user",
    features: [
      { name: "young", expr: ["<", ["col", "age"], ["const", 30]] },
      { name: "insecure", expr: ["not", ["col", "secure"]] },
      { name: "ip", expr: ["matches", ["lower", ["col", "url"]], "^[a-z]+://\\d{1,3}(\\.\\d{1,3}){3}", "^[a-z]+://\\d{1,3}(\\.\\d{1,3}){3}"] },
      { name: "dots", expr: ["min", ["max", ["count", ["col", "url"], "."], ["const", 0]], ["const", 5]] },
      { name: "ratio", expr: ["/", ["col", "n"], ["-", ["col", "age"], ["const", 10]], 0.5] },
      { name: "len", expr: ["log1p", ["length", ["col", "url"]]] },
    ],
    intelligence: {
      kind: "rules", base: 0, lo: 0, hi: 1,
      rules: [[0, ">", 0.5, 0.5], [1, ">", 0.5, 0.25], [2, ">", 0.5, 0.45], [3, ">=", 3, 0.1]],
    },
    outputs: ["risk"],
    actions: ["allow", "warn", "block"],
    presentations: [
      { mode: "none", choices: [], outcomes: [] },
      { mode: "prompt", choices: ["back", "go"], outcomes: ["chose:back", "chose:go"] },
      { mode: "automate", choices: [], outcomes: ["reported_mistake"] },
    ],
    default: 0,
    experience: { kind: "thresholds", column: 0, levels: [[0.9, 2], [0.6, 1]], otherwise: 0, explored: 4, explore: null },
    guard: {
      offset: 4,
      layers: [{ name: "blocked", map: [2, 2, 2], when: ["isin", ["lower", ["col", "user"]], ["mallory"]] }],
      caps: [{ name: "cap_warn", action: 1, fallback: 0, limit: 2, per_ns: 86400000000000 }],
    },
    reasons: [
      "risk ≥ 0.9 → block", "risk ≥ 0.6 → warn", "risk < 0.6 → allow", "risk is NaN → allow",
      "user on BlockList 'blocked' → block", "warn shown 2 times per 1 day, 0:00:00 to this unit → allow", "kill switch on → allow",
    ],
    ...over,
  };
}

test("BLAKE2b and the exploration draw match Python's", () => {
  assert.equal(hex(blake2b(new TextEncoder().encode("abc"), 64)),
    "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");
  assert.equal(hex(blake2b(new TextEncoder().encode("abc"), 8)), "d8bb14d833d59559");
  assert.equal(uniform("0123456789abcdef0123456789abcdef"), 0.8833108082136426);
  assert.equal(uniform("0123456789abcdef0123456789abcdef", 2), 0.2357696609793668);
  assert.equal(uniform("req-42"), 0.45936430031805375);
  assert.equal(uniform("日本-é", 1), 0.43315417404082135);
  assert.equal(uniform(""), 0.967161288601997);
});

test("decides with features, rules, thresholds and reasons", () => {
  const rt = loadBundle(form());
  assert.equal(rt.bundleId, "toy-000000000001");
  assert.equal(rt.system, "toy");
  assert.equal(rt.schemaVersion, "2");
  const ctx = { user: "u1", age: 3, secure: false, url: "HTTP://10.0.0.1/a.b.c" };
  const d = rt.decide(ctx, { decisionId: "d1", timestampMs: 0 });
  assert.equal(d.score, 1); // 0.5 + 0.25 + 0.45 + 0.1, clipped
  assert.equal(d.action, "block");
  assert.equal(d.propensity, 1);
  assert.equal(d.why, "risk ≥ 0.9 → block");
  assert.equal(d.mode, "automate");
  assert.equal(d.guardrail, null);
  assert.deepEqual(d.scores, { risk: 1 });
  assert.equal(rt.decide({ user: "u1" }, { decisionId: "d2" }).why, "risk < 0.6 → allow");
  const nan = rt.decide({ user: "u1", age: NaN }, { decisionId: "d3" }); // nonfinite → the default, 10
  assert.equal(nan.action, "allow");
});

test("guardrails: a block list fires, a frequency cap counts per unit and window", () => {
  const rt = loadBundle(form());
  const blocked = rt.decide({ user: "MALLORY" }, { decisionId: "x" });
  assert.equal(blocked.action, "block");
  assert.equal(blocked.guardrail, "blocked");
  assert.equal(blocked.why, "user on BlockList 'blocked' → block");
  const warn = { user: "u2", age: 1, secure: false }; // 0.75 → warn
  const day = 86400000;
  const got = [0, 1, 2, 3].map((i) => rt.decide(warn, { decisionId: `w${i}`, timestampMs: 5 * day + i }).action);
  assert.deepEqual(got, ["warn", "warn", "allow", "allow"]);
  assert.equal(rt.decide(warn, { timestampMs: 6 * day }).action, "warn"); // a new window
  assert.equal(rt.decide({ ...warn, user: "u3" }, { timestampMs: 5 * day }).action, "warn"); // another unit
  const next = loadBundle(form({ bundle: { id: "toy-000000000002", system: "toy", schema_version: "2" } }), { caps: rt.caps });
  assert.equal(next.decide(warn, { timestampMs: 6 * day + 1 }).action, "warn"); // a new bundle goes on counting
  assert.equal(next.decide(warn, { timestampMs: 6 * day + 2 }).action, "allow");
  assert.equal(loadBundle(form()).decide(warn, { timestampMs: 6 * day + 3 }).action, "warn"); // fresh counts
});

test("exploration: epsilon-greedy draws from the decision id with exact propensities", () => {
  const rt = loadBundle(form({
    guard: null,
    experience: { kind: "thresholds", column: 0, levels: [[0.9, 2], [0.6, 1]], otherwise: 0, explored: 4,
      explore: { kind: "epsilon", epsilon: 0.5, low: "-Infinity", high: "Infinity", mask: null } },
    reasons: ["a", "b", "c", "d", "explored → allow", "explored → warn", "explored → block", "kill"],
  }));
  let explored = 0;
  for (let i = 0; i < 200; i++) {
    const id = `id-${i}`;
    const d = rt.decide({ user: "u" }, { decisionId: id });
    const u = uniform(id); // greedy allow: [0.5 + 1/6, 1/6, 1/6]
    const want = u < 0.5 + 0.5 / 3 ? "allow" : u < 0.5 + 1 / 3 ? "warn" : "block";
    assert.equal(d.action, want);
    assert.equal(d.propensity, want === "allow" ? (1 - 0.5) + 0.5 / 3 : 0.5 / 3);
    if (d.why.startsWith("explored")) explored++;
  }
  assert.ok(explored > 40 && explored < 100, String(explored));
});

test("invalid contexts are refused naming the field", () => {
  const rt = loadBundle(form());
  /** @type {[any, string, string][]} */
  const cases = [
    [{}, "user", "present"],
    [{ user: null }, "user", "a string of at most 16 characters"],
    [{ user: "x".repeat(17) }, "user", "a string of at most 16 characters"],
    [{ user: "u", age: -1 }, "age", "a number ≥ 0"],
    [{ user: "u", age: "3" }, "age", "a number ≥ 0"],
    [{ user: "u", n: 1.5 }, "n", "an integer in [0, 100]"],
    [{ user: "u", n: 101 }, "n", "an integer in [0, 100]"],
    [{ user: "u", secure: 1 }, "secure", "true or false"],
    [{ user: "u", browser: "edge" }, "browser", "one of ['chrome', 'other']"],
    [{ user: "u", url: "a\uD800b" }, "url", "text UTF-8 can encode (no lone surrogate)"],
    [[1], "<context>", "a JSON object (a mapping of field names)"],
  ];
  for (const [ctx, field, rule] of cases) {
    assert.throws(() => rt.decide(ctx), (e) => e instanceof ContextError && e.field === field && e.rule === rule, JSON.stringify(ctx));
  }
  assert.equal(rt.decide({ user: "😀".repeat(16) }).unit, "😀".repeat(16)); // 16 code points fit
  assert.throws(() => rt.decide({ user: "u" }, { unit: "v" }), (e) => e instanceof ContextError && e.field === "user");
  const strict = loadBundle(form({ schema: { ...form().schema, extra: "forbid" } }));
  assert.throws(() => strict.decide({ user: "u", other: 1 }), (e) => e instanceof ContextError && e.field === "other");
});

test("bundles it cannot load are refused naming the check", () => {
  const bad = (/** @type {any} */ what, /** @type {string} */ field, expect = {}) =>
    assert.throws(() => loadBundle(what, expect), (e) => e instanceof BundleError && e.field === field, field);
  const envelope = { format: "closedloop.client.bundle.signed", format_version: 1, payload: JSON.stringify(form()), signature: null };
  assert.equal(loadBundle(envelope).bundleId, "toy-000000000001");
  assert.equal(loadBundle(JSON.stringify(envelope)).bundleId, "toy-000000000001");
  bad({ ...envelope, payload: envelope.payload.slice(0, 100) }, "payload");
  bad(JSON.stringify(envelope).slice(0, 50), "payload");
  bad({ ...form(), format: "other" }, "format");
  bad({ ...form(), format_version: 2 }, "format_version");
  bad(form(), "system", { system: "phishing" });
  bad(form(), "schema_version", { schemaVersion: "1" });
  bad({ ...form(), intelligence: { kind: "sklearn" } }, "intelligence");
  bad({ ...form(), intelligence: { kind: "rules", base: 0, lo: 0, hi: 1, rules: [[99, ">", 0, 1]] } }, "intelligence");
  bad({ ...form(), features: [{ name: "f", expr: ["eval", "x"] }] }, "feature");
  bad({ ...form(), features: [{ name: "f", expr: ["toString", ["col", "url"], "x"] }] }, "feature"); // not an own operator
  bad({ ...form(), intelligence: { kind: "rules", base: 0, lo: 0, hi: 1, rules: [[0, "constructor", 0, 1]] } }, "intelligence");
  bad({ ...form(), intelligence: { kind: "threshold_rule", i: 0, op: "__proto__", t: 0, then: 1, otherwise: 0 } }, "intelligence");
  bad({ ...form(), features: [{ name: "f", expr: ["col", "nope"] }] }, "features");
  bad({ ...form(), features: [{ name: "f", expr: ["matches", ["col", "url"], "(", "("] }] }, "features");
  bad({ ...form(), experience: { kind: "ranking", explored: 0 } }, "experience");
  bad({ ...form(), reasons: ["too few"] }, "reasons");
  bad({ ...form(), guard: { ...form().guard, caps: [{ name: "c", action: 7, fallback: 0, limit: 1, per_ns: 1 }] } }, "guardrails");
});

test("LightGBM trees, calibration and ensembles score as specified", () => {
  // one tree: f0 <= 0.5 → leaf 0 (-1), else leaf 1 (+1); NaN goes left (missing type NaN, default left)
  const tree = { kind: "lightgbm", roots: [0], feature: [0], threshold: [0.5], flags: [1 | (2 << 1)], left: [~0], right: [~1],
    leaves: [-1, 1], binary: false, scale: 1, divisor: 0, kzero: Math.fround(1e-35) };
  const vote = { kind: "vote", w: [1, 3], total: 4, members: [tree, { kind: "linear", logistic: false, idx: [5], w: [2], b: 0.25 }] };
  const rt = loadBundle(form({ intelligence: { kind: "isotonic", x: [-1, 1, 3], y: [0, 0.5, 1], slope: [0.25, 0.25], base: vote } }));
  const s = rt.decide({ user: "u", age: 100 }, { decisionId: "a" }).score; // young 0 → -1; len log1p(0) = 0 → 0.25
  assert.equal(s, 0.25 * ((-1 + 0.25 * 3) / 4 - -1) + 0); // isotonic over the vote
  const platt = loadBundle(form({ intelligence: { kind: "platt", a: 2, b: -1, base: tree } }));
  assert.equal(platt.decide({ user: "u", age: 1 }, { decisionId: "a" }).score, 1 / (1 + Math.exp(-1)));
});

test("the kill switch's decision is the default action", () => {
  const d = loadBundle(form()).decideDefault({ user: "u" }, { decisionId: "k" });
  assert.equal(d.action, "allow");
  assert.equal(d.propensity, 1);
  assert.equal(d.why, "kill switch on → allow");
  assert.equal(d.killswitch, true);
  assert.equal(d.score, null);
});
