// A non-streamed completion whose client goes away while it generates: prints whether the
// server counted it cancelled, how long until its slot was free, the tokens it generated, and
// the status of a request made afterwards.
// usage: node disconnect.mjs BASE_URL API_KEY
const [base, key] = process.argv.slice(2);
const headers = {'content-type': 'application/json', authorization: 'Bearer ' + key};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const metrics = async () => {
  const m = await (await fetch(base + '/metrics')).text();
  const get = (name) => Number((m.match(new RegExp('^' + name + ' (\\d+)', 'm')) || [0, -1])[1]);
  return {cancelled: get('huginn_requests_cancelled_total'), active: get('huginn_active_slots'),
          tokens: get('huginn_completion_tokens_total')};
};
const abort = new AbortController();
const long = fetch(base + '/v1/completions', {
  method: 'POST', headers, signal: abort.signal,
  body: JSON.stringify({model: 'tiny', prompt: 'hello', max_tokens: 4000, num_steps: 64,
                        ignore_eos: true, temperature: 0})}).then((r) => r.status, (e) => e.name);
let started = false;
for (const t0 = Date.now(); Date.now() - t0 < 10000 && !started;) {
  started = (await metrics()).active === 1;
  if (!started) await sleep(20);
}
await sleep(200);  // generating
abort.abort();
const t0 = Date.now();
let m = await metrics();
while (Date.now() - t0 < 10000 && !(m.cancelled === 1 && m.active === 0)) {
  await sleep(20);
  m = await metrics();
}
const freed_ms = Date.now() - t0;
const after = await fetch(base + '/v1/completions', {
  method: 'POST', headers,
  body: JSON.stringify({model: 'tiny', prompt: 'hello', max_tokens: 4, temperature: 0})});
console.log(JSON.stringify({started, client: await long, cancelled: m.cancelled, active: m.active,
                            freed_ms, tokens: m.tokens, after: after.status}));
