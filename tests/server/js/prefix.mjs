// Time to first token with the prefix cache: for each of REPS distinct system prompts of about
// TOKENS tokens, one request (cold: nothing cached) and then another with the same system prompt
// and a different question (warm), each max_tokens 1 at NUM_STEPS recurrences, so the latency
// is the time to the first token. `answers` (the warm requests' choices, logprobs included) lets
// the caller compare them with a server without the cache.
// Usage: node prefix.mjs BASE_URL MODEL KEY NUM_STEPS [TOKENS] [REPS]
// Prints {prompt_tokens, cold_ms, warm_ms, cached_tokens, answers} (lists: one per rep).
const [base, model, key, numSteps, tokensArg, repsArg] = process.argv.slice(2);
const want = Number(tokensArg || 1000), reps = Number(repsArg || 3);
const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };

async function ask(prompt) {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/completions`, { method: 'POST', headers,
    body: JSON.stringify({ model, prompt, max_tokens: 1, temperature: 0, logprobs: 1,
                           num_steps: Number(numSteps) }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return { ms: performance.now() - t0, body };
}

async function count(text) {
  const r = await fetch(`${base}/tokenize`, { method: 'POST', headers,
    body: JSON.stringify({ content: text }) });
  const body = await r.json();
  return body.tokens.length;
}

const words = ['hello', 'world,', 'there.', 'the', 'says', 'back'];
async function systemPrompt(rep) {
  let s = `system ${rep}:`;
  for (let i = 0; (await count(s)) < want; i += 50)
    for (let j = 0; j < 50; j++) s += ' ' + words[(i + j * (rep + 1)) % words.length];
  return s;
}

const out = { prompt_tokens: [], cold_ms: [], warm_ms: [], cached_tokens: [], answers: [] };
for (let rep = 0; rep < reps; rep++) {
  const sys = await systemPrompt(rep);
  const cold = await ask(sys + ' hello back');
  const warm = await ask(sys + ' hello hello world');
  out.prompt_tokens.push(warm.body.usage.prompt_tokens);
  out.cold_ms.push(cold.ms);
  out.warm_ms.push(warm.ms);
  out.cached_tokens.push(warm.body.usage.prompt_tokens_details.cached_tokens);
  out.answers.push(JSON.stringify(warm.body.choices[0]));
}
console.log(JSON.stringify(out));
