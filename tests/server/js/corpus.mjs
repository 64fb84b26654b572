// Sends each request of a hostile corpus (JSON file) and prints [{name, status, body}].
// Usage: node corpus.mjs BASE_URL CORPUS.json MODEL KEY
// A case: {name, method?, path, headers?, auth? (default true), body? (raw string),
//          json? (object, serialized), repeat? {text, count} (body = text repeated), expect}.
// MODEL and KEY in bodies/headers are written as ${MODEL} / ${KEY}.
import { readFileSync } from 'node:fs';

const [base, corpusPath, model, key] = process.argv.slice(2);
const fill = (s) => s.replaceAll('${MODEL}', model).replaceAll('${KEY}', key);
const cases = JSON.parse(readFileSync(corpusPath, 'utf8'));
const results = [];
for (const c of cases) {
  const headers = { 'content-type': 'application/json' };
  if (c.auth !== false) headers.authorization = `Bearer ${key}`;
  for (const [k, v] of Object.entries(c.headers ?? {})) headers[k.toLowerCase()] = fill(v);
  let body;
  if (c.json !== undefined) body = fill(JSON.stringify(c.json));
  else if (c.body !== undefined) body = fill(c.body);
  else if (c.repeat) body = c.repeat.prefix + c.repeat.text.repeat(c.repeat.count) + (c.repeat.suffix ?? '');
  const method = c.method ?? (body === undefined ? 'GET' : 'POST');
  try {
    const r = await fetch(base + c.path, { method, headers, body, signal: AbortSignal.timeout(20000) });
    results.push({ name: c.name, status: r.status, body: await r.text(),
                   retry_after: r.headers.get('retry-after') });
  } catch (e) {
    results.push({ name: c.name, status: -1, body: String(e) });
  }
}
console.log(JSON.stringify(results));
