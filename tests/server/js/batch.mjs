// Concurrent completions with mixed per-request depth settings, all at once; prints each
// answer (text, per-token iterations, finish reason) and the server's decode-batch counters.
// usage: node batch.mjs BASE_URL API_KEY
const [base, key] = process.argv.slice(2);
const headers = {'content-type': 'application/json', authorization: 'Bearer ' + key};
const common = {model: 'tiny', max_tokens: 24, ignore_eos: true, return_iterations: true};
const bodies = [
  {prompt: 'hello world', num_steps: 2, temperature: 0},
  {prompt: 'the world', num_steps: 8, temperature: 0},
  {prompt: 'hello there', exit_criterion: 'kl', exit_threshold: 0.01, max_steps: 16, temperature: 0},
  {prompt: 'hello', num_steps: 4, warm_start: true, temperature: 0},
  {prompt: 'world says', num_steps: 6, temperature: 0.8, seed: 42},
  {prompt: 'hello back', exit_criterion: 'latent-diff', exit_threshold: 0.3, max_steps: 12,
   init_scale: 1, seed: 7, temperature: 0},
  {prompt: 'hello hello', exit_criterion: 'argmax-stability', exit_threshold: 2, max_steps: 10,
   warm_start: 'raw', temperature: 0.7, top_k: 20, seed: 3, max_tokens: 9},
  {prompt: 'the', num_steps: 1, temperature: 0, max_tokens: 5},
];
const answers = await Promise.all(bodies.map(async (b) => {
  const r = await fetch(base + '/v1/completions',
                        {method: 'POST', headers, body: JSON.stringify({...common, ...b})});
  const j = await r.json();
  if (r.status !== 200) return {status: r.status, body: j};
  const c = j.choices[0];
  return {status: 200, text: c.text, finish: c.finish_reason,
          iterations: j.usage.iterations_per_token};
}));
const m = await (await fetch(base + '/metrics')).text();
const counter = (name) => Number((m.match(new RegExp('^' + name + ' (\\d+)', 'm')) || [0, -1])[1]);
console.log(JSON.stringify({answers, batches: counter('huginn_decode_batches_total'),
                            rows: counter('huginn_decode_batch_rows_total')}));
