// Shared by the server benchmarks' clients (prefix.mjs, chunk.mjs): long prompts made of the
// bench tokenizer's corpus words, and one-token greedy completions with logprobs.
const words = ['hello', 'world,', 'there.', 'the', 'says', 'back'];

export async function countTokens(base, key, text) {
  const r = await fetch(`${base}/tokenize`, { method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ content: text }) });
  return (await r.json()).tokens.length;
}

// `head` starts the prompt; rep + stride picks the word order (distinct prompts per rep).
export async function longPrompt(base, key, head, rep, stride, want) {
  let s = head;
  for (let i = 0; (await countTokens(base, key, s)) < want; i += 50)
    for (let j = 0; j < 50; j++) s += ' ' + words[(i + j * (rep + stride)) % words.length];
  return s;
}

// A completion of max_tokens 1 (its latency is the time to the first token), greedy, logprobs 1,
// at numSteps recurrences: {ms: latency, at: when it ended, body}.
export async function completeOne(base, key, model, prompt, numSteps) {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/completions`, { method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, prompt, max_tokens: 1, temperature: 0, logprobs: 1,
                           num_steps: Number(numSteps) }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  const at = performance.now();
  return { ms: at - t0, at, body };
}
