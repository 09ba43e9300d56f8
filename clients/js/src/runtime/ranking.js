// A ranking system's bundle in a client: one request and its candidates → a slate, exactly as
// closedloop.experience.ranking.RankingPlan.decide ranks them:
//
//   request validated → candidates validated (each an object; undeclared keys when forbidden;
//   fields in order, the first bad candidate's first bad field named candidates[i].field; ids
//   unique) → features of each candidate beside the request's fields → intelligence → the score
//   → slots drawn from the decision id (slate.js) → the RankedDecision's fields
//
// With the kill switch (rankDefault) the intelligence is skipped: the first min(k, N) candidates
// in input order, each slot with propensity 1. Guardrails do not apply to rankings (Python refuses them).

import { BundleError, ContextError } from "./errors.js";
import { compileProgram } from "./expr.js";
import { uniform } from "./hash.js";
import { decisionTime, newDecisionId } from "./ids.js";
import { bindIntelligence } from "./intelligence.js";
import { drawSlate, slatePolicy } from "./slate.js";
import { compileSchema } from "./schema.js";

const OBJECT_RULE = "a JSON object (a mapping of field names)";

/** @param {any} v */
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

export class RankingRuntime {
  /** @param {any} form the client form of a ranking system's bundle */
  constructor(form) {
    const bad = (/** @type {string} */ f, /** @type {string} */ why) => new BundleError(f, why);
    this.kind = "ranking";
    this.bundleId = /** @type {string} */ (form.bundle.id);
    this.system = /** @type {string} */ (form.bundle.system);
    this.schemaVersion = /** @type {string} */ (form.bundle.schema_version);
    this.contentDigest = form.bundle.content_digest ?? null;
    const e = form.experience;
    if (!Number.isInteger(e.k) || e.k < 1 || e.column !== 0) throw bad("experience", "a ranking needs k ≥ 1 and the score's column");
    for (const t of ["why", "explored_why", "killswitch_why"]) if (typeof e[t] !== "string") throw bad("experience", `'${t}' must be text`);
    this.k = /** @type {number} */ (e.k);
    this._policy = slatePolicy(e.explore);
    this._why = /** @type {string} */ (e.why);
    this._exploredWhy = /** @type {string} */ (e.explored_why);
    this._killWhy = /** @type {string} */ (e.killswitch_why);
    const req = compileSchema(form.schema);
    const cand = form.candidates;
    if (!isObject(cand)) throw bad("candidates", "a ranking bundle must declare its candidates");
    let cs;
    try {
      cs = compileSchema(cand);
    } catch (e) {
      throw e instanceof BundleError ? bad("candidates", e.detail) : e;
    }
    this._validateRequest = req.validate;
    this._requestNames = req.names;
    this._validateCandidate = cs.validate;
    this._candidateForbid = cand.extra === "forbid";
    this._candidateNames = new Set(cs.names);
    this._nRequest = req.fields.length;
    /** @type {Map<string, {index: number, kind: string}>} request fields, then candidate fields */
    const fields = new Map();
    req.fields.forEach((/** @type {any} */ f, /** @type {number} */ i) => fields.set(f.name, { index: i, kind: f.kind }));
    cs.fields.forEach((/** @type {any} */ f, /** @type {number} */ i) => {
      if (fields.has(f.name)) throw bad("candidates", `the candidate field '${f.name}' is also a request field`);
      fields.set(f.name, { index: this._nRequest + i, kind: f.kind });
    });
    const unit = req.fields.findIndex((/** @type {any} */ f) => f.name === form.unit);
    if (unit < 0) throw bad("unit", `the unit ${JSON.stringify(form.unit)} is not a request field`);
    this.unitField = /** @type {string} */ (form.unit);
    this._unit = unit;
    this._unitIsInt = req.fields[unit].kind === "int";
    const id = cs.fields.findIndex((/** @type {any} */ f) => f.name === cand.id);
    if (id < 0) throw bad("candidates", `the candidate id ${JSON.stringify(cand.id)} is not a candidate field`);
    this.candidateIdField = /** @type {string} */ (cand.id);
    this._id = id;
    this._idIsInt = cs.fields[id].kind === "int";
    if (!Array.isArray(form.features) || form.features.length === 0) throw bad("features", "the bundle declares no features");
    this.featureNames = form.features.map((/** @type {any} */ f) => String(f.name));
    this._features = compileProgram(form.features, fields, "feature");
    this._score = bindIntelligence(form.intelligence, { nFeatures: form.features.length, fields });
    if (!Array.isArray(form.outputs) || form.outputs.length !== 1) throw bad("intelligence", "the client runtime scores one output");
    this.outputs = form.outputs.map(String);
    this.mode = typeof form.mode === "string" ? form.mode : "organize";
  }

  /** A ranking bundle has no single decision: rank(request, candidates). */
  decide() {
    throw new BundleError("experience", "this bundle ranks candidates: call rank(request, candidates)");
  }

  /** The request's cleaned values and the candidates as given (Python's order of checks). @param {any} request @param {any} candidates */
  _request(request, candidates) {
    if (!isObject(request)) throw new ContextError("<context>", OBJECT_RULE, request);
    const has = Object.prototype.hasOwnProperty.call(request, "candidates");
    const raw = candidates === undefined ? (has ? request.candidates : undefined) : candidates;
    if (raw === undefined) throw new ContextError("candidates", "present", undefined);
    if (!Array.isArray(raw)) throw new ContextError("candidates", "a list of candidate objects", raw);
    let req = request;
    if (has) {
      const { candidates: _, ...rest } = request;
      req = rest;
    }
    return { vals: this._validateRequest(req), raw };
  }

  /** Each candidate's cleaned values and the ids, or a ContextError naming candidates[i].field. @param {any[]} raw */
  _candidates(raw) {
    const n = raw.length;
    for (let i = 0; i < n; i++) if (!isObject(raw[i])) throw new ContextError(`candidates[${i}]`, OBJECT_RULE, raw[i]);
    if (this._candidateForbid) {
      for (let i = 0; i < n; i++) {
        for (const key of Object.keys(raw[i])) {
          if (!this._candidateNames.has(key)) throw new ContextError(`candidates[${i}].${key}`, "a declared field (this schema forbids others)", raw[i][key]);
        }
      }
    }
    const rows = new Array(n), ids = new Array(n);
    for (let i = 0; i < n; i++) {
      try {
        rows[i] = this._validateCandidate(raw[i]);
      } catch (e) {
        if (e instanceof ContextError) throw new ContextError(`candidates[${i}].${e.field}`, e.rule, e.value);
        throw e;
      }
      ids[i] = this._idIsInt ? String(rows[i][this._id]) : rows[i][this._id];
    }
    const seen = new Set();
    for (let i = 0; i < n; i++) {
      if (seen.has(ids[i])) throw new ContextError(`candidates[${i}].${this.candidateIdField}`, "unique among the request's candidates", ids[i]);
      seen.add(ids[i]);
    }
    return { rows, ids };
  }

  /** @param {any[]} vals @param {any} opts */
  _unitOf(vals, opts) {
    const unit = this._unitIsInt ? String(vals[this._unit]) : vals[this._unit];
    if (opts.unit !== undefined && opts.unit !== null && String(opts.unit) !== unit) {
      throw new ContextError(this.unitField, `the unit the decision was asked for (${String(opts.unit)})`, unit);
    }
    return unit;
  }

  /** Every candidate's score (input order): its features beside the request's fields. @param {any[]} vals @param {any[][]} rows */
  scores(vals, rows) {
    const nr = this._nRequest;
    const v = vals.slice();
    return rows.map((row) => {
      for (let j = 0; j < row.length; j++) v[nr + j] = row[j];
      return this._score(this._features.run(v), v);
    });
  }

  /**
   * Rank one request's candidates, as the Python runtime's Runtime.decide does for a ranking system.
   * @param {any} request the request's fields (it may hold the list as `candidates` when the second argument is omitted)
   * @param {any[]} [candidates] the candidate objects
   * @param {{decisionId?: string, unit?: string, timestampMs?: number, timestampNs?: bigint | string | number}} [opts]
   */
  rank(request, candidates, opts = {}) {
    return this._rank(request, candidates, opts, false);
  }

  /** The kill switch's ranking: the first min(k, N) candidates in input order, propensity 1 each. @param {any} request @param {any[]} [candidates] @param {any} [opts] */
  rankDefault(request, candidates, opts = {}) {
    return this._rank(request, candidates, opts, true);
  }

  /** @param {any} request @param {any} candidates @param {any} opts @param {boolean} kill */
  _rank(request, candidates, opts, kill) {
    const { vals, raw } = this._request(request, candidates);
    const unit = this._unitOf(vals, opts);
    const decisionId = opts.decisionId ?? newDecisionId();
    if (typeof decisionId !== "string" || decisionId === "") throw new ContextError("decisionId", "a non-empty string", decisionId);
    const ts = decisionTime(opts);
    const n = raw.length;
    const { rows, ids } = n ? this._candidates(raw) : { rows: [], ids: [] };
    const m = this.k < n ? this.k : n;
    if (kill) {
      return this._decision(decisionId, unit, ts, ids, [], ids.slice(0, m), new Array(m).fill(1), 1, this._fill(this._killWhy, m, n), true);
    }
    const s = this.scores(vals, rows);
    const u = [];
    if (this._policy !== null) for (let j = 0; j < m; j++) u.push(uniform(decisionId, j));
    const d = drawSlate(s, this.k, this._policy, u);
    let why = this._fill(this._why, m, n);
    if (d.explored.length) why += this._exploredWhy.replace("{}", `[${d.explored.join(", ")}]`);
    return this._decision(decisionId, unit, ts, ids, s, d.picks.map((i) => ids[i]), d.slots, d.propensity, why, false);
  }

  /** @param {string} template @param {number} m @param {number} n */
  _fill(template, m, n) {
    return template.replaceAll("{m}", String(m)).replaceAll("{n}", String(n));
  }

  /**
   * @param {string} decisionId @param {string} unit @param {bigint | number} ts @param {string[]} ids @param {number[]} scores
   * @param {string[]} slate @param {number[]} slotPropensities @param {number} propensity @param {string} why @param {boolean} kill
   */
  _decision(decisionId, unit, ts, ids, scores, slate, slotPropensities, propensity, why, kill) {
    return {
      decisionId,
      system: this.system,
      unit,
      timestampMs: typeof ts === "bigint" ? Number(ts / 1000000n) : ts,
      bundleId: this.bundleId,
      candidates: ids,
      candidateScores: scores,
      slate,
      slotPropensities,
      propensity,
      why,
      mode: this.mode,
      killswitch: kill,
      flight: null,
    };
  }
}
