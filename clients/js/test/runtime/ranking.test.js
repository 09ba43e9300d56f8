// Unit tests of the client runtime's rankings on a hand-written client form (the parity with Python
// on the feed example's exported bundles is tests/clients/test_js_parity_ranking.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { BundleError, ContextError, loadBundle } from "../../src/runtime/index.js";
import { drawSlate } from "../../src/runtime/slate.js";

/** A ranking form: score = the candidate's `q` plus 1 in the request's favourite category. */
function form(explore = null, k = 2) {
  return {
    format: "closedloop.client.bundle",
    format_version: 1,
    bundle: { id: "rank-000000000001", system: "rank", schema_version: "1" },
    schema: { extra: "forbid", fields: [
      { name: "user", kind: "str", required: true, choices: null, limit: 16, rule: "a string of at most 16 characters" },
      { name: "fav", kind: "str", required: false, default: "", choices: null, limit: 16, rule: "a string of at most 16 characters" },
    ] },
    unit: "user",
    candidates: { extra: "ignore", id: "id", fields: [
      { name: "id", kind: "int", required: true, ge: 0, le: null, rule: "an integer ≥ 0" },
      { name: "cat", kind: "str", required: true, choices: null, limit: 8, rule: "a string of at most 8 characters" },
      { name: "q", kind: "float", required: true, ge: null, le: null, nonfinite: "keep", rule: "a number" },
    ] },
    features: [{ name: "q", expr: ["col", "q"] }, { name: "fav", expr: ["==", ["col", "cat"], ["col", "fav"]] }],
    intelligence: { kind: "linear", logistic: false, idx: [0, 1], w: [1, 1], b: 0 },
    outputs: ["score"],
    experience: { kind: "ranking", column: 0, k, explore, why: "top {m} of {n}", explored_why: "; slots {} differ", killswitch_why: "kill {m} of {n}" },
    mode: "organize",
  };
}

const cands = [{ id: 1, cat: "a", q: 0.5 }, { id: 2, cat: "b", q: 0.2 }, { id: 3, cat: "a", q: 0.5 }];

test("a greedy ranking takes the top k, ties to the lower index, with the request's fields in the features", () => {
  const rt = loadBundle(form());
  assert.equal(rt.kind, "ranking");
  const d = rt.rank({ user: "u", fav: "b" }, cands, { decisionId: "d1" });
  assert.deepEqual(d.slate, ["2", "1"]); // 0.2 + 1 first; 0.5 and 0.5 tie: the first of them
  assert.deepEqual(d.candidates, ["1", "2", "3"]);
  assert.deepEqual(d.candidateScores, [0.5, 1.2, 0.5]);
  assert.deepEqual(d.slotPropensities, [1, 1]);
  assert.equal(d.why, "top 2 of 3");
  assert.deepEqual(rt.rank({ user: "u", candidates: cands }, undefined, { decisionId: "d1" }).slate, ["1", "3"]);
  const e = rt.rank({ user: "u" }, [], { decisionId: "d" });
  assert.deepEqual([e.slate, e.why, e.propensity], [[], "top 0 of 0", 1]);
  const kill = rt.rankDefault({ user: "u" }, cands, { decisionId: "d" });
  assert.deepEqual([kill.slate, kill.slotPropensities, kill.candidateScores, kill.why, kill.killswitch], [["1", "2"], [1, 1], [], "kill 2 of 3", true]);
  assert.throws(() => rt.decide({ user: "u" }), (x) => x instanceof BundleError && x.field === "experience");
});

test("invalid requests and candidates are refused naming the field, as Python names it", () => {
  const rt = loadBundle(form());
  const field = (/** @type {any} */ r, /** @type {any} */ c) => {
    try {
      rt.rank(r, c, { decisionId: "d" });
    } catch (e) {
      if (e instanceof ContextError) return e.field;
      throw e;
    }
    return null;
  };
  assert.equal(field([], cands), "<context>");
  assert.equal(field({ user: "u" }, undefined), "candidates");
  assert.equal(field({ user: "u" }, { id: 1 }), "candidates");
  assert.equal(field({ user: "u", other: 1 }, cands), "other"); // the request's schema forbids others
  assert.equal(field({ user: "u" }, [cands[0], 7]), "candidates[1]");
  assert.equal(field({ user: "u" }, [cands[0], { id: 2, cat: "b" }, { id: -1, cat: "c", q: 1 }]), "candidates[1].q");
  assert.equal(field({ user: "u" }, [cands[0], { ...cands[1], id: 1 }]), "candidates[1].id");
  assert.equal(field({ user: "u" }, [cands[0], { ...cands[1], extra: "ignored" }]), null);
  assert.throws(() => rt.rank({ user: "u" }, cands, { unit: "v" }), (e) => e instanceof ContextError && e.field === "user");
});

test("non-finite scores: NaN last, +inf ones share a softmax slot, −inf before NaN", () => {
  const soft = { kind: "softmax", t: 1 };
  assert.deepEqual(drawSlate([NaN, 1, -Infinity, 2], 4, null, []).picks, [3, 1, 2, 0]);
  const a = drawSlate([1, Infinity, Infinity], 2, soft, [0.6, 0.2]);
  assert.deepEqual([a.picks, a.slots], [[2, 1], [0.5, 1]]);
  const b = drawSlate([NaN, -Infinity], 2, soft, [0.9, 0.9]);
  assert.deepEqual([b.picks, b.slots], [[1, 0], [1, 1]]);
  const c = drawSlate([0, Math.log(3)], 1, soft, [0.2]); // weights 1/3 and 1: the first holds 0.25
  assert.deepEqual(c.picks, [0]);
  assert.ok(Math.abs(c.slots[0] - 0.25) < 1e-15);
  const eps = drawSlate([0.1, 0.9, 0.5], 2, { kind: "epsilon", eps: 0.3, low: 0, high: 1 }, [0.05, 0.99]);
  assert.deepEqual([eps.picks, eps.slots, eps.explored], [[0, 2], [0.3 / 3, 0.15], [0, 1]]); // Python: the same for each case
});

test("a malformed ranking is refused at load", () => {
  const bad = (/** @type {any} */ f, /** @type {string} */ field) =>
    assert.throws(() => loadBundle(f), (e) => e instanceof BundleError && e.field === field, field);
  bad({ ...form(), experience: { ...form().experience, k: 0 } }, "experience");
  bad(form({ kind: "softmax", temperature: -1 }), "experience");
  bad({ ...form(), candidates: { ...form().candidates, id: "nope" } }, "candidates");
  bad({ ...form(), candidates: { ...form().candidates, fields: [{ ...form().candidates.fields[0], name: "user" }] } }, "candidates");
  bad({ ...form(), intelligence: { kind: "affinity", idx: [0], w: [1], b: 0, keys: ["user", "cat"], a: ["u"], bv: ["a"], codes: [1], offsets: [0.5] } },
    "intelligence");
});
