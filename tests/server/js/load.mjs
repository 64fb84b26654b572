// Bounded load test: CONC clients, each sending REQS completions one after another (keep-alive).
// Every response is checked against the one a lone request got for the same prompt (greedy).
// Usage: node load.mjs BASE_URL MODEL KEY CONC REQS MAX_TOKENS NUM_STEPS
// Prints {total, errors, mismatches, seconds, req_per_s, tok_per_s, p50_ms, p99_ms, max_ms}.
// Optional SERVER_PID (8th argument, same machine): also report the server's CPU time per
// generated token and its mean decode batch size over the timed part only.
// Environment: LOAD_EXIT=CRITERION:THRESHOLD (e.g. kl:1e-3) asks for that adaptive exit with
// max_steps NUM_STEPS instead of a fixed NUM_STEPS; the output's mean_steps is then the mean
// recurrences per generated token (usage.mean_iterations_per_token, weighted by tokens).
// LOAD_DECODE=wavefront|speculative sends the timed requests with that "decode"; the answers
// they are checked against stay sequential decoding's (both decoders are lossless when greedy).
const [base, model, key, conc, reqs, maxTokens, numSteps, serverPid] = process.argv.slice(2);
const C = Number(conc), R = Number(reqs);
const prompts = ['hello world', 'the world says', 'hello there', 'hello hello', 'says hello back',
                 'world, hello', 'there. the', 'back hello world'];

const [exitName, exitThreshold] = (process.env.LOAD_EXIT || '').split(':');
const depth = exitName ? { exit_criterion: exitName, exit_threshold: Number(exitThreshold),
                           max_steps: Number(numSteps) }
                       : { num_steps: Number(numSteps) };
const decode = process.env.LOAD_DECODE ? { decode: process.env.LOAD_DECODE } : {};

async function ask(prompt, extra = {}) {
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST', signal: AbortSignal.timeout(600000),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, prompt, max_tokens: Number(maxTokens), temperature: 0, seed: 0,
                           ...depth, ...extra }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return body;
}

const want = {};
for (const p of prompts) want[p] = (await ask(p)).choices[0].text;

import { readFileSync } from 'node:fs';
async function serverSample() {
  if (!serverPid) return null;
  const f = readFileSync(`/proc/${serverPid}/stat`, 'utf8').split(') ')[1].split(' ');
  const m = await (await fetch(`${base}/metrics`)).text();
  const get = (n) => Number((m.match(new RegExp('^' + n + ' (\\d+)', 'm')) || [0, 0])[1]);
  return { ticks: Number(f[11]) + Number(f[12]), batches: get('huginn_decode_batches_total'),
           rows: get('huginn_decode_batch_rows_total') };
}
const s0 = await serverSample();
const lat = [];
let errors = 0, mismatches = 0, tokens = 0, steps = 0;
const firstErrors = [];
const t0 = performance.now();
await Promise.all(Array.from({ length: C }, async (_, c) => {
  for (let i = 0; i < R; i++) {
    const p = prompts[(c * 7 + i) % prompts.length];
    const s = performance.now();
    try {
      const body = await ask(p, decode);
      lat.push(performance.now() - s);
      tokens += body.usage.completion_tokens;
      steps += body.usage.mean_iterations_per_token * body.usage.completion_tokens;
      if (body.choices[0].text !== want[p]) mismatches++;
    } catch (e) {
      errors++;
      if (firstErrors.length < 3) firstErrors.push(String(e));
    }
  }
}));
const seconds = (performance.now() - t0) / 1000;
const s1 = await serverSample();
const server = s1 && { cpu_ms_per_token: (s1.ticks - s0.ticks) * 10 / tokens,  // 100 ticks/s
                       mean_batch: s1.batches > s0.batches ? (s1.rows - s0.rows) / (s1.batches - s0.batches) : 1 };
lat.sort((a, b) => a - b);
const q = (f) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] : 0);
console.log(JSON.stringify({ total: C * R, errors, mismatches, seconds, req_per_s: (C * R) / seconds,
  tok_per_s: tokens / seconds, mean_steps: tokens ? steps / tokens : 0, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.at(-1) ?? 0,
  first_errors: firstErrors, ...(server ? { server } : {}) }));
