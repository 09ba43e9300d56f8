// closedloop's client runtime: load a bundle exported for clients (`closedloop bundle export
// --target js`) and decide exactly as the Python runtime's Runtime.decide does:
//
//   validate → features → intelligence → experience (exploration drawn from the decision id)
//            → guardrails (the system's around the bundle's; caps last) → decision
//
// Plain ES module, no dependencies: Node ≥ 18 and browsers. Loading never evaluates bundle
// content: expressions and models are JSON interpreted by this package. The signature of an
// exported file is checked by the SDK (clients/js/src/sdk) before the payload reaches loadBundle.

import { BundleError, ContextError } from "./errors.js";
import { bindExperience, choose } from "./experience.js";
import { compileProgram } from "./expr.js";
import { bindGuard, MemoryCapStore } from "./guard.js";
import { uniform } from "./hash.js";
import { bindIntelligence } from "./intelligence.js";
import { decisionTime, newDecisionId } from "./ids.js";
import { RankingRuntime } from "./ranking.js";
import { compileSchema } from "./schema.js";

export { BundleError, ContextError, MemoryCapStore, newDecisionId, RankingRuntime, uniform };

export const CLIENT_FORMAT = "closedloop.client.bundle";
export const ENVELOPE_FORMAT = "closedloop.client.bundle.signed";
export const FORMAT_VERSION = 1;

/** The client form inside `exported`: the envelope's payload (parsed), or the form itself. @param {any} exported */
function clientForm(exported) {
  if (typeof exported === "string") {
    try {
      exported = JSON.parse(exported);
    } catch (e) {
      throw new BundleError("payload", `the bundle is not JSON (truncated?): ${e}`);
    }
  }
  if (!exported || typeof exported !== "object" || Array.isArray(exported)) throw new BundleError("format", "the bundle must be a JSON object");
  if (exported.format === ENVELOPE_FORMAT) {
    if (exported.format_version !== FORMAT_VERSION) throw new BundleError("format_version", `version ${exported.format_version} is not ${FORMAT_VERSION}`);
    if (typeof exported.payload !== "string") throw new BundleError("payload", "the signed envelope carries no payload text");
    try {
      return JSON.parse(exported.payload);
    } catch (e) {
      throw new BundleError("payload", `the payload is not JSON (truncated?): ${e}`);
    }
  }
  return exported;
}

/**
 * Load a bundle exported for clients.
 * @param {any} exported the parsed export file (the signed envelope), its payload parsed, or the JSON text
 * @param {{system?: string, schemaVersion?: string, caps?: MemoryCapStore}} [expect] refuse a bundle for another
 *   system or schema version; `caps`: the frequency caps' counts to go on with (the `caps` of the runtime this one
 *   replaces: a new bundle of the same system keeps counting, as the Python runtime's cap store does across loads)
 * @returns {ClientRuntime | RankingRuntime} a RankingRuntime (`rank`) for a ranking system's bundle
 */
export function loadBundle(exported, expect = {}) {
  const form = clientForm(exported);
  if (form.format !== CLIENT_FORMAT) throw new BundleError("format", `not a closedloop client bundle (format ${JSON.stringify(form.format)})`);
  if (form.format_version !== FORMAT_VERSION) throw new BundleError("format_version", `version ${form.format_version} is not ${FORMAT_VERSION}`);
  const b = form.bundle;
  if (!b || typeof b.id !== "string" || typeof b.system !== "string" || typeof b.schema_version !== "string") {
    throw new BundleError("bundle", "the bundle's id, system and schema version are missing");
  }
  if (expect.system !== undefined && expect.system !== b.system) throw new BundleError("system", `built for system '${b.system}', not '${expect.system}'`);
  if (expect.schemaVersion !== undefined && expect.schemaVersion !== b.schema_version) {
    throw new BundleError("schema_version", `built for schema version '${b.schema_version}', expected '${expect.schemaVersion}'`);
  }
  if (expect.caps !== undefined && !(expect.caps instanceof MemoryCapStore)) throw new BundleError("caps", "caps must be a runtime's caps");
  if (form.experience && form.experience.kind === "ranking") return new RankingRuntime(form);
  return new ClientRuntime(form, expect.caps ?? new MemoryCapStore());
}

class ClientRuntime {
  /** @param {any} form @param {MemoryCapStore} caps */
  constructor(form, caps) {
    const bad = (/** @type {string} */ f, /** @type {string} */ why) => new BundleError(f, why);
    this.bundleId = /** @type {string} */ (form.bundle.id);
    this.system = /** @type {string} */ (form.bundle.system);
    this.schemaVersion = /** @type {string} */ (form.bundle.schema_version);
    this.contentDigest = form.bundle.content_digest ?? null;
    const schema = compileSchema(form.schema);
    this._validate = schema.validate;
    this._fieldNames = schema.names;
    /** @type {Map<string, {index: number, kind: string}>} */
    const fields = new Map(schema.fields.map((/** @type {any} */ f, /** @type {number} */ i) => [f.name, { index: i, kind: f.kind }]));
    const unit = fields.get(form.unit);
    if (unit === undefined) throw bad("unit", `the unit ${JSON.stringify(form.unit)} is not a context field`);
    this.unitField = /** @type {string} */ (form.unit);
    this._unit = unit.index;
    this._unitIsInt = unit.kind === "int";
    if (!Array.isArray(form.features) || form.features.length === 0) throw bad("features", "the bundle declares no features");
    this.featureNames = form.features.map((/** @type {any} */ f) => String(f.name));
    this._features = compileProgram(form.features, fields, "feature");
    this._score = bindIntelligence(form.intelligence, { nFeatures: form.features.length, fields });
    if (!Array.isArray(form.outputs) || form.outputs.length !== 1) throw bad("intelligence", "the client runtime scores one output");
    this.outputs = form.outputs.map(String);
    if (!Array.isArray(form.actions) || form.actions.length < 1) throw bad("actions", "the bundle declares no actions");
    this.actions = form.actions.map(String);
    const k = this.actions.length;
    if (!Array.isArray(form.presentations) || form.presentations.length !== k) throw bad("actions", "one presentation per action");
    this._presentations = form.presentations;
    if (!Number.isInteger(form.default) || form.default < 0 || form.default >= k) throw bad("actions", "the default action is out of range");
    this.defaultAction = this.actions[form.default];
    this._chooser = bindExperience(form.experience, k, this.outputs.length);
    /** The frequency caps' counts (pass them to the next loadBundle to keep counting). */
    this.caps = caps;
    this._guard = bindGuard(form.guard, k, fields, caps);
    /** @type {string[]} */
    this._guardNames = this._guard ? [...form.guard.layers, ...form.guard.caps].map((/** @type {any} */ g) => String(g.name)) : [];
    if (!Array.isArray(form.reasons) || !form.reasons.every((/** @type {any} */ r) => typeof r === "string")) throw bad("reasons", "the reasons must be text");
    const needed = (this._guard ? this._guard.offset + form.guard.layers.length + form.guard.caps.length : form.experience.explored + (this._chooser.explores ? k : 0)) + 1;
    if (form.reasons.length !== needed) throw bad("reasons", `expected ${needed} reasons, got ${form.reasons.length}`);
    this._reasons = form.reasons;
    this.killReason = form.reasons[form.reasons.length - 1];
  }

  /** Validate one context (throws ContextError naming the field): the cleaned values by field name. @param {any} context */
  validate(context) {
    const vals = this._validate(context);
    return Object.fromEntries(this._fieldNames.map((/** @type {string} */ n, /** @type {number} */ i) => [n, vals[i]]));
  }

  /** @param {any[]} vals @param {any} opts */
  _unitOf(vals, opts) {
    const unit = this._unitIsInt ? String(vals[this._unit]) : vals[this._unit];
    if (opts.unit !== undefined && opts.unit !== null && String(opts.unit) !== unit) {
      throw new ContextError(this.unitField, `the unit the decision was asked for (${String(opts.unit)})`, unit);
    }
    return unit;
  }

  /**
   * Decide for one context, as the Python runtime's Runtime.decide.
   * @param {any} context a context object (parsed JSON)
   * @param {{decisionId?: string, unit?: string, timestampMs?: number, timestampNs?: bigint | string | number}} [opts]
   */
  decide(context, opts = {}) {
    const vals = this._validate(context);
    const unit = this._unitOf(vals, opts);
    const x = this._features.run(vals);
    const s = [this._score(x, vals)];
    const ch = this._chooser;
    let [a, w] = ch.one(s);
    const decisionId = opts.decisionId ?? newDecisionId();
    if (typeof decisionId !== "string" || decisionId === "") throw new ContextError("decisionId", "a non-empty string", decisionId);
    /** @type {number[] | null} */
    let probs = null;
    if (ch.explores) {
      probs = ch.probs(s, a);
      const e = choose(probs, uniform(decisionId));
      if (e !== a) {
        a = e;
        w = ch.explored + e;
      }
    }
    let guardrail = null, propensity;
    const ts = decisionTime(opts);
    if (this._guard !== null) {
      const [b, fired, p] = this._guard.one(vals, a, probs, unit, ts);
      a = b;
      propensity = p;
      if (fired >= 0) {
        w = this._guard.offset + fired;
        guardrail = this._guardNames[fired];
      }
    } else {
      propensity = probs === null ? 1 : probs[a];
    }
    return this._decision(decisionId, unit, ts, s, a, propensity, w, guardrail, false);
  }

  /** The decision the kill switch gives: the system's default action, propensity 1. @param {any} context @param {any} [opts] */
  decideDefault(context, opts = {}) {
    const vals = this._validate(context);
    const unit = this._unitOf(vals, opts);
    const decisionId = opts.decisionId ?? newDecisionId();
    const d = this.actions.indexOf(this.defaultAction);
    return this._decision(decisionId, unit, null, null, d, 1, this._reasons.length - 1, null, true);
  }

  /**
   * @param {string} decisionId @param {string} unit @param {bigint | number | null} ts @param {number[] | null} s
   * @param {number} a @param {number} propensity @param {number} w @param {string | null} guardrail @param {boolean} kill
   */
  _decision(decisionId, unit, ts, s, a, propensity, w, guardrail, kill) {
    const pres = this._presentations[a];
    /** @type {Record<string, number>} */
    const scores = {};
    if (s !== null) scores[this.outputs[0]] = s[0];
    return {
      decisionId,
      system: this.system,
      unit,
      timestampMs: ts === null ? Date.now() : typeof ts === "bigint" ? Number(ts / 1000000n) : ts,
      bundleId: this.bundleId,
      scores,
      score: s === null ? null : s[0],
      action: this.actions[a],
      propensity,
      why: this._reasons[w],
      mode: pres.mode,
      presentation: pres,
      guardrail,
      killswitch: kill,
      flight: null,
    };
  }
}
