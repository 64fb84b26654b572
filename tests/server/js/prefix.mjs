// Time to first token with the prefix cache: for each of REPS distinct system prompts of about
// TOKENS tokens, one request (cold: nothing cached) and then another with the same system prompt
// and a different question (warm), each max_tokens 1 at NUM_STEPS recurrences, so the latency
// is the time to the first token. `answers` (the warm requests' choices, logprobs included) lets
// the caller compare them with a server without the cache.
// Usage: node prefix.mjs BASE_URL MODEL KEY NUM_STEPS [TOKENS] [REPS]
// Prints {prompt_tokens, cold_ms, warm_ms, cached_tokens, answers} (lists: one per rep).
import { completeOne, longPrompt } from './bench_client.mjs';

const [base, model, key, numSteps, tokensArg, repsArg] = process.argv.slice(2);
const want = Number(tokensArg || 1000), reps = Number(repsArg || 3);
const ask = (prompt) => completeOne(base, key, model, prompt, numSteps);

const systemPrompt = (rep) => longPrompt(base, key, `system ${rep}:`, rep, 1, want);

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
