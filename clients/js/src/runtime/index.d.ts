// Types of the client runtime (src/runtime/index.js), for TypeScript users; the JavaScript carries
// the same types as JSDoc.

export class BundleError extends Error {
  constructor(field: string, detail: string);
  /** The part or check that failed: "payload", "format", "system", "schema_version", "features", … */
  field: string;
  detail: string;
}

export class ContextError extends Error {
  constructor(field: string, rule: string, value: unknown);
  /** The context field that failed ("<context>" when the context is not an object). */
  field: string;
  /** What it must be, in Python's words (e.g. "a number ≥ 0", "present"). */
  rule: string;
  value: unknown;
}

/** Frequency caps' counts per (cap, window, unit); hand a runtime's `caps` to the next loadBundle. */
export class MemoryCapStore {
  count(cap: number, bucket: number, unit: string): number;
  add(cap: number, bucket: number, unit: string): void;
  admit(cap: number, bucket: number, unit: string, want: boolean, limit: number): boolean;
}

export interface Presentation {
  mode: "automate" | "prompt" | "annotate" | "organize" | "none";
  choices: string[];
  outcomes: string[];
}

export interface Decision {
  decisionId: string;
  system: string;
  unit: string;
  timestampMs: number;
  bundleId: string;
  /** The intelligence's output(s) by name ({} for a kill-switch decision). */
  scores: Record<string, number>;
  /** The one output's value (NaN possible), or null for a kill-switch decision. */
  score: number | null;
  action: string;
  propensity: number;
  why: string;
  mode: Presentation["mode"];
  presentation: Presentation;
  guardrail: string | null;
  killswitch: boolean;
  flight: null;
}

export interface DecideOptions {
  /** Default: 32 random hex digits. */
  decisionId?: string;
  /** When given, it must equal the context's unit field. */
  unit?: string;
  /** The decision time (frequency caps count in windows of it); default now. */
  timestampMs?: number;
  timestampNs?: bigint | string | number;
}

export interface ClientRuntime {
  readonly bundleId: string;
  readonly system: string;
  readonly schemaVersion: string;
  readonly contentDigest: string | null;
  readonly unitField: string;
  readonly featureNames: string[];
  readonly outputs: string[];
  readonly actions: string[];
  readonly defaultAction: string;
  readonly killReason: string;
  readonly caps: MemoryCapStore;
  decide(context: unknown, opts?: DecideOptions): Decision;
  decideDefault(context: unknown, opts?: DecideOptions): Decision;
  validate(context: unknown): Record<string, unknown>;
}

/** A ranking decision, as Python's RankedDecision (closedloop.experience.ranked). */
export interface RankedDecision {
  decisionId: string;
  system: string;
  unit: string;
  timestampMs: number;
  bundleId: string;
  /** The candidate ids in input order (an Int id as text). */
  candidates: string[];
  /** One score per candidate, input order (empty under the kill switch). */
  candidateScores: number[];
  /** The ids shown, slot by slot: min(k, N) of them. */
  slate: string[];
  /** P(slot j gets slate[j] | the earlier slots). */
  slotPropensities: number[];
  /** Their product, left to right. */
  propensity: number;
  why: string;
  mode: string;
  killswitch: boolean;
  flight: null;
}

export interface RankingRuntime {
  readonly kind: "ranking";
  readonly bundleId: string;
  readonly system: string;
  readonly schemaVersion: string;
  readonly contentDigest: string | null;
  readonly unitField: string;
  readonly candidateIdField: string;
  readonly featureNames: string[];
  readonly outputs: string[];
  readonly k: number;
  /** `candidates` omitted: read from `request.candidates`. Throws ContextError (`candidates[i].field`, …). */
  rank(request: unknown, candidates?: unknown[], opts?: DecideOptions): RankedDecision;
  /** The kill switch's ranking: the first min(k, N) candidates in input order, propensity 1 each. */
  rankDefault(request: unknown, candidates?: unknown[], opts?: DecideOptions): RankedDecision;
  /** Throws a BundleError (field "experience"): a ranking bundle ranks. */
  decide(context: unknown, opts?: DecideOptions): never;
}

export const CLIENT_FORMAT: "closedloop.client.bundle";
export const ENVELOPE_FORMAT: "closedloop.client.bundle.signed";
export const FORMAT_VERSION: 1;

export function loadBundle(
  exported: unknown,
  expect?: { system?: string; schemaVersion?: string; caps?: MemoryCapStore },
): ClientRuntime | RankingRuntime;
export function newDecisionId(): string;
export function uniform(decisionId: string, salt?: number): number;
