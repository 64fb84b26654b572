// Time to first token of a short request that arrives while a long prompt prefills: for each
// of REPS distinct prompts of about TOKENS tokens, a long completion (max_tokens 1) and, DELAY
// ms after it was sent, a short one ("hello world", max_tokens 1), both greedy at NUM_STEPS
// recurrences with logprobs. With max_tokens 1 a request's latency is its time to first token.
// `answers` (both choices per rep, logprobs included) lets the caller compare servers.
// Usage: node chunk.mjs BASE_URL MODEL KEY NUM_STEPS [TOKENS] [REPS] [DELAY_MS]
// Prints {prompt_tokens, long_ms, short_ms, short_first, answers} (lists: one per rep;
// short_first: whether the short answer arrived before the long one).
import { completeOne, longPrompt } from './bench_client.mjs';

const [base, model, key, numSteps, tokensArg, repsArg, delayArg] = process.argv.slice(2);
const want = Number(tokensArg || 1000), reps = Number(repsArg || 3), delay = Number(delayArg || 300);
const ask = (prompt) => completeOne(base, key, model, prompt, numSteps);

const document = (rep) => longPrompt(base, key, `document ${rep}:`, rep, 2, want);

const out = { prompt_tokens: [], long_ms: [], short_ms: [], short_first: [], answers: [] };
for (let rep = 0; rep < reps; rep++) {
  const text = await document(rep);
  const long = ask(text);
  await new Promise((ok) => setTimeout(ok, delay));
  const short = await ask('hello world');
  const l = await long;
  out.prompt_tokens.push(l.body.usage.prompt_tokens);
  out.long_ms.push(l.ms);
  out.short_ms.push(short.ms);
  out.short_first.push(short.at < l.at);
  out.answers.push(JSON.stringify([l.body.choices[0], short.body.choices[0]]));
}
console.log(JSON.stringify(out));
