// The chat page (GET /) in a real headless browser: Debian's chromium driven by puppeteer-core.
// Usage: node chat_page.mjs BASE_URL API_KEY CHROMIUM [timeout]
// Loads the page without the key (its 401 must be shown), enters the key, sends messages with
// different controls, and prints one JSON object: per answer the request the page sent, what
// its DOM shows (each token's text, data-steps, data-exit, shading, title; the plot's bars) and
// the API's non-streamed answer to the same request; then the page's handling of a 400, and
// every console message, page error and failed request (the C++ test asserts on all of it).
// With `timeout` (a server started with a short --timeout): one long answer, which the server
// ends with an error event inside the stream; what the page shows of it.
import puppeteer from 'puppeteer-core';

const [base, key, chromium, mode] = process.argv.slice(2);
const out = { console: [], page_errors: [], failed_requests: [], answers: [] };
let phase = 'load-without-key';

// CI runs as root, and chromium refuses to start its sandbox as root: hence --no-sandbox (the
// page is our own, served from 127.0.0.1).
const browser = await puppeteer.launch({
  executablePath: chromium, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60000);
  page.on('console', (m) => out.console.push({ phase, type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => out.page_errors.push({ phase, message: String(e) }));
  page.on('requestfailed', (r) => {
    // A request the page aborts itself (the Stop button) is not a failure; others are.
    out.failed_requests.push({ phase, url: r.url(), error: r.failure()?.errorText });
  });
  const sent = [];
  page.on('request', (r) => {
    if (r.url().endsWith('/v1/chat/completions')) sent.push(JSON.parse(r.postData()));
  });

  const res = await page.goto(`${base}/`, { waitUntil: 'networkidle0' });
  out.status = res.status();
  out.headers = res.headers();
  await page.waitForSelector('#error:not([hidden])');
  out.error_without_key = await page.$eval('#error', (e) => e.textContent);

  phase = 'with-key';
  await page.type('#api_key', key);
  await page.$eval('#api_key', (e) => e.dispatchEvent(new Event('change')));
  await page.waitForFunction(() => document.getElementById('model').textContent !== '(no model)');
  out.model = await page.$eval('#model', (e) => e.textContent);
  out.error_hidden_after_key = await page.$eval('#error', (e) => e.hidden);

  const set = async (id, value) => {
    await page.$eval(`#${id}`, (e, v) => {
      e.value = v;
      e.dispatchEvent(new Event('change'));
    }, String(value));
  };

  if (mode === 'timeout') await streamError(page, set);
  else await conversation(page, set, sent);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));

// Answers with different controls, each against the API's own; a 400; the chat going on.
async function conversation(page, set, sent) {
  // One answer with the given controls: the request the page sent, its DOM, the API's answer.
  const answer = async (message, controls) => {
    for (const [id, v] of Object.entries(controls)) await set(id, v);
    const before = await page.$$eval('.msg.assistant', (d) => d.length);
    await page.type('#prompt', message);
    await page.click('#send');
    await page.waitForFunction((n) => {
      const msgs = document.querySelectorAll('.msg.assistant');
      return msgs.length > n && msgs[msgs.length - 1].dataset.done;
    }, {}, before);
    const dom = await page.$$eval('.msg.assistant', (msgs) => {
      const div = msgs[msgs.length - 1];
      const tokens = [...div.querySelectorAll('.tok')].map((t) => ({
        text: t.textContent, steps: Number(t.dataset.steps), exit: t.dataset.exit,
        color: getComputedStyle(t).backgroundColor, title: t.title }));
      const text = [...div.childNodes].filter((n) => !(n.classList && n.classList.contains('stats')))
        .map((n) => n.textContent).join('');
      const bars = [...document.querySelectorAll('#plot rect')].map((r) => ({
        steps: Number(r.dataset.steps), height: Number(r.getAttribute('height')),
        fill: r.getAttribute('fill') }));
      return { done: div.dataset.done, tokens, text, bars,
               stats: div.querySelector('.stats')?.textContent,
               error_hidden: document.getElementById('error').hidden };
    });
    const request = sent[sent.length - 1];
    // The same request, not streamed, straight to the API.
    const plain = { ...request, stream: false };
    delete plain.stream_options;
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST', body: JSON.stringify(plain),
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` } });
    const api = await r.json();
    out.answers.push({ request, dom, api_status: r.status, api });
  };

  await answer('hello world', { num_steps: 6, exit_criterion: 'none', temperature: 0,
                                max_tokens: 12, seed: 7, cache_slots: 0, warm_start: 'off' });
  // Hovering the third token: its depth beside the plot, its bar marked.
  await (await page.$$('.msg.assistant .tok'))[2].hover();
  out.hover = await page.$eval('#hover', (e) => e.textContent);
  out.hot_bars = await page.$$eval('#plot rect', (bars) =>
    bars.map((b, i) => (b.classList.contains('hot') ? i : -1)).filter((i) => i >= 0));
  await answer('the world says hello', { num_steps: 16, exit_criterion: 'kl', exit_threshold: 0.01,
                                         temperature: 0.8, seed: 11, max_tokens: 16 });
  await answer('hello there', { num_steps: 8, exit_criterion: 'kl', exit_threshold: '',
                                cache_slots: 4, warm_start: 'auto', temperature: 0, max_tokens: 10 });

  // A control the page cannot send (num_steps blank: the shading's scale): shown, nothing sent.
  const nSent = sent.length;
  await set('num_steps', '');
  await page.type('#prompt', 'hello');
  await page.click('#send');
  await page.waitForSelector('#error:not([hidden])');
  out.error_blank_steps = await page.$eval('#error', (e) => e.textContent);
  out.sent_with_blank_steps = sent.length - nSent;
  await set('prompt', '');

  // A request the server refuses (num_steps over its --max-steps-limit): the page shows it.
  phase = 'expect-400';
  await set('num_steps', 100000);
  await page.type('#prompt', 'hello');
  await page.click('#send');
  await page.waitForSelector('#error:not([hidden])');
  out.error_400 = await page.$eval('#error', (e) => e.textContent);
  out.after_400_done = await page.$$eval('.msg.assistant', (m) => m[m.length - 1].dataset.done);
  // The conversation goes on after the error, without the failed turn.
  phase = 'after-error';
  await answer('hello', { num_steps: 4, exit_criterion: 'none', temperature: 0, max_tokens: 6 });
}

// An answer the server ends with an error event inside its stream (HTTP 200): shown.
async function streamError(page, set) {
  phase = 'stream-error';
  for (const [id, v] of Object.entries({ num_steps: 256, temperature: 0, max_tokens: 60 }))
    await set(id, v);
  await page.type('#prompt', 'hello');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('.msg.assistant')?.dataset.done);
  out.stream_error = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  out.stream_error_done = await page.$eval('.msg.assistant', (e) => e.dataset.done);
  out.send_enabled_after = await page.$eval('#send', (e) => !e.disabled);
}
