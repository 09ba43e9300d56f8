// Decide every line of a JSON-lines file with an exported bundle, for the parity test and the bench:
//   node tools/decide-file.mjs BUNDLE.json IN.jsonl OUT.bin
// IN: one {"c": context, "id": decision id, "ts": "nanoseconds"} per line. OUT: per line four
// float64 (action index or -1 if refused, reason index or -1, propensity, score); the refused
// lines' fields are printed on stdout as JSON ({"refused": [[line, field], …]}).
import fs from "node:fs";
import { ContextError, loadBundle } from "../src/runtime/index.js";

const [bundlePath, inPath, outPath] = process.argv.slice(2);
const rt = loadBundle(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
const lines = fs.readFileSync(inPath, "utf8").split("\n").filter((l) => l !== "");
const out = new Float64Array(lines.length * 4);
const why = new Map(rt._reasons.map((/** @type {string} */ r, /** @type {number} */ i) => [r, i]));
const actions = new Map(rt.actions.map((/** @type {string} */ a, /** @type {number} */ i) => [a, i]));
/** @type {[number, string][]} */
const refused = [];
for (let i = 0; i < lines.length; i++) {
  const row = JSON.parse(lines[i]);
  try {
    const d = rt.decide(row.c, { decisionId: row.id, timestampNs: row.ts });
    out.set([actions.get(d.action), why.get(d.why), d.propensity, d.score], 4 * i);
  } catch (e) {
    if (!(e instanceof ContextError)) throw e;
    out.set([-1, -1, NaN, NaN], 4 * i);
    refused.push([i, e.field]);
  }
}
fs.writeFileSync(outPath, new Uint8Array(out.buffer));
process.stdout.write(JSON.stringify({ refused }) + "\n");
