// Rank every line of a JSON-lines file with an exported ranking bundle, for the parity test and the bench:
//   node tools/rank-file.mjs BUNDLE.json IN.jsonl OUT.jsonl [kill]
// IN: one {"r": request (its candidates under "candidates"), "id": decision id, "ts": "nanoseconds"} per line.
// OUT: per line {"slate": [...], "slots": [...], "p": propensity, "scores": [...], "why": "..."} or, for a
// refused request, {"refused": field}. `kill`: the kill switch's rankings (rankDefault).
import fs from "node:fs";
import { ContextError, loadBundle } from "../src/runtime/index.js";

const [bundlePath, inPath, outPath, mode] = process.argv.slice(2);
const rt = loadBundle(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
const lines = fs.readFileSync(inPath, "utf8").split("\n").filter((l) => l !== "");
const out = [];
for (const line of lines) {
  const row = JSON.parse(line);
  try {
    const opts = { decisionId: row.id, timestampNs: row.ts };
    const d = mode === "kill" ? rt.rankDefault(row.r, undefined, opts) : rt.rank(row.r, undefined, opts);
    out.push(JSON.stringify({ slate: d.slate, slots: d.slotPropensities, p: d.propensity, scores: d.candidateScores, why: d.why }));
  } catch (e) {
    if (!(e instanceof ContextError)) throw e;
    out.push(JSON.stringify({ refused: e.field }));
  }
}
fs.writeFileSync(outPath, out.join("\n") + "\n");
