// A screenshot of the chat page after one answer (scripts/chat-page-screenshot.sh runs it).
// Usage: node screenshot.mjs BASE_URL API_KEY CHROMIUM OUT.png
import puppeteer from 'puppeteer-core';

const [base, key, chromium, file] = process.argv.slice(2);
// --no-sandbox: chromium refuses its sandbox when run as root (as in CI and containers).
const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
                                         args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 680 });
  page.on('pageerror', (e) => { console.error(String(e)); process.exitCode = 1; });
  await page.goto(`${base}/`, { waitUntil: 'networkidle0' });
  const set = (id, v) => page.$eval(`#${id}`, (e, x) => {
    e.value = x;
    e.dispatchEvent(new Event('change'));
  }, String(v));
  await set('api_key', key);
  await page.waitForFunction(() => document.getElementById('model').textContent !== '(no model)');
  for (const [id, v] of Object.entries({ num_steps: 16, exit_criterion: 'kl', exit_threshold: 0.005,
                                         temperature: 0.8, seed: 3, max_tokens: 48 }))
    await set(id, v);
  await page.type('#prompt', 'hello world, what does the world say?');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('.msg.assistant')?.dataset.done);
  await page.hover('.msg.assistant .tok:nth-of-type(5)');
  await page.screenshot({ path: file });
} finally {
  await browser.close();
}
