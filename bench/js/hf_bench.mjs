// The Hugging Face `tokenizers` library (Rust, through its official Node binding) on the same
// corpus as bench_tokenizer, in the same run: one encode call of the whole text and encodes of
// ~64 KiB pieces, best of RUNS, MB/s by process CPU time and by wall time. Writes the ids of the
// one call (uint32 little-endian) to IDS_OUT so bench_tokenizer can compare them with its own.
//
//   RAYON_NUM_THREADS=1 node hf_bench.mjs TOKENIZER_JSON CORPUS RUNS IDS_OUT
// Prints one JSON line.
import { readFileSync, writeFileSync } from 'node:fs';
import { Tokenizer } from 'tokenizers';

const [tokPath, corpusPath, runsArg, idsOut] = process.argv.slice(2);
const runs = Math.max(1, parseInt(runsArg || '3', 10));
const tok = Tokenizer.fromFile(tokPath);
const bytes = readFileSync(corpusPath);
const text = bytes.toString('utf8');
const mb = bytes.length / 1e6;

// ~64 KiB pieces cut at character boundaries, as bench_tokenizer cuts them.
const pieces = [];
for (let i = 0; i < bytes.length;) {
  let e = Math.min(bytes.length, i + 64 * 1024);
  while (e < bytes.length && (bytes[e] & 0xC0) === 0x80) ++e;
  pieces.push(bytes.subarray(i, e).toString('utf8'));
  i = e;
}

const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const wall = () => Number(process.hrtime.bigint()) / 1e9;

await tok.encode(pieces[0] || '');  // warm up
let bestOne = Infinity, bestOneWall = Infinity, bestPieces = Infinity, bestPiecesWall = Infinity;
let ids = null;
for (let r = 0; r < runs; ++r) {
  let c0 = cpu(), w0 = wall();
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  bestOne = Math.min(bestOne, cpu() - c0);
  bestOneWall = Math.min(bestOneWall, wall() - w0);
  if (r === 0) ids = enc.getIds();
  c0 = cpu(); w0 = wall();
  for (const p of pieces) await tok.encode(p, null, { addSpecialTokens: false });
  bestPieces = Math.min(bestPieces, cpu() - c0);
  bestPiecesWall = Math.min(bestPiecesWall, wall() - w0);
}
if (idsOut) writeFileSync(idsOut, Buffer.from(Uint32Array.from(ids).buffer));
console.log(JSON.stringify({
  tokens: ids.length,
  one_cpu_mbps: mb / bestOne, one_wall_mbps: mb / bestOneWall,
  pieces_cpu_mbps: mb / bestPieces, pieces_wall_mbps: mb / bestPiecesWall,
}));
