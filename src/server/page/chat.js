// The chat page's script. It streams /v1/chat/completions with return_iterations, so that every
// generated token arrives in a chunk of its own carrying `iterations` (the recurrences it took)
// and `exit_value` (the exit criterion's value at its last check); each token becomes a span
// shaded by iterations / num_steps, and a bar of the plot. Errors of the server (an HTTP error,
// an error event inside the stream) and of the network are shown, never swallowed.
'use strict';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const conversation = [];  // {role, content} of the messages so far
let model = null;     // the served model's id (GET /v1/models)
let running = null;   // the AbortController of the answer being streamed

// Few recurrences: pale blue; num_steps of them: orange. A pure function of (steps, max), so
// equal depths look equal and different depths differ within one answer.
function shade(steps, max) {
  const f = Math.min(Math.max(max > 1 ? (steps - 1) / (max - 1) : 1, 0), 1);
  return `hsl(${Math.round(215 - 190 * f)}, 85%, ${Math.round(93 - 28 * f)}%)`;
}

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function setStatus(text) { $('status').textContent = text; }

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api_key').value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// The message of an OpenAI-style error body, or the status line when the body is not one.
async function errorOf(res) {
  const text = await res.text();
  try {
    const j = JSON.parse(text);
    if (j && j.error && j.error.message) return `${res.status}: ${j.error.message}`;
  } catch (e) { /* not JSON: fall through */ }
  return `${res.status} ${res.statusText}${text ? `: ${text.slice(0, 300)}` : ''}`;
}

async function loadModel() {
  try {
    const res = await fetch('v1/models', { headers: headers() });
    if (!res.ok) throw new Error(await errorOf(res));
    const j = await res.json();
    if (!j.data || !j.data.length) throw new Error('the server lists no model');
    model = j.data[0].id;
    $('model').textContent = model;
    clearError();
    return true;
  } catch (e) {
    model = null;
    $('model').textContent = '(no model)';
    showError(`Could not list the models: ${e.message}`);
    return false;
  }
}

// Integer field -> number, or undefined when blank; throws naming the field when malformed.
function intField(id) {
  const v = $(id).value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`${id} must be a whole number, got '${v}'`);
  return n;
}

function numberField(id) {
  const v = $(id).value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${id} must be a number, got '${v}'`);
  return n;
}

// The request body for the conversation so far, from the controls.
function buildRequest() {
  const body = {
    model, messages: conversation.slice(), stream: true, stream_options: { include_usage: true },
    return_iterations: true,
    num_steps: intField('num_steps'), max_tokens: intField('max_tokens'),
    temperature: numberField('temperature'), seed: intField('seed'),
    cache_slots: intField('cache_slots'),
  };
  const exit = $('exit_criterion').value;
  if (exit !== 'none') {
    body.exit_criterion = exit;
    body.exit_threshold = numberField('exit_threshold');
  }
  const warm = $('warm_start').value;
  if (warm !== 'off') body.warm_start = warm;
  // The shading's scale: the server's default depth is not known here.
  if (body.num_steps === undefined) throw new Error('num_steps: give the recurrences per token');
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return body;
}

// ---- the plot: one bar per token of the answer being shown, height = its recurrences ----

const plot = { steps: [], max: 1, answer: null };  // answer: the message div it shows
const P = { w: 300, h: 140, left: 26, right: 6, top: 8, bottom: 18 };

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawPlot() {
  const svg = $('plot');
  svg.replaceChildren();
  const iw = P.w - P.left - P.right, ih = P.h - P.top - P.bottom;
  const max = Math.max(plot.max, ...plot.steps, 1);
  svg.append(svgEl('line', { class: 'axis', x1: P.left, y1: P.top, x2: P.left, y2: P.top + ih }),
             svgEl('line', { class: 'axis', x1: P.left, y1: P.top + ih, x2: P.left + iw, y2: P.top + ih }));
  const label = (x, y, text, anchor) => {
    const t = svgEl('text', { x, y, 'text-anchor': anchor });
    t.textContent = text;
    svg.append(t);
  };
  label(P.left - 3, P.top + 8, String(max), 'end');
  label(P.left - 3, P.top + ih, '0', 'end');
  label(P.left + iw, P.h - 4, `token ${plot.steps.length}`, 'end');
  const slots = Math.max(plot.steps.length, 32);
  const bw = iw / slots;
  plot.steps.forEach((s, i) => {
    const bh = (s / max) * ih;
    const bar = svgEl('rect', { x: P.left + i * bw, y: P.top + ih - bh, width: Math.max(bw - 0.5, 0.5),
                                height: bh, fill: shade(s, plot.max), 'data-steps': s });
    const tip = svgEl('title', {});
    tip.textContent = `token ${i + 1}: ${s} recurrences`;
    bar.append(tip);
    svg.append(bar);
  });
  if (plot.steps.length) {
    const mean = plot.steps.reduce((a, b) => a + b, 0) / plot.steps.length;
    const y = P.top + ih - (mean / max) * ih;
    svg.append(svgEl('line', { x1: P.left, x2: P.left + iw, y1: y, y2: y, stroke: '#1d2330',
                               'stroke-dasharray': '3 2', 'stroke-width': 0.8 }));
    label(P.left + iw, y - 2, `mean ${mean.toFixed(2)}`, 'end');
  }
}

// Hovering a token shows its depth and exit value beside the plot (a title tooltip alone is
// slow to appear) and marks its bar when the plot shows its answer.
function hoverToken(span) {
  for (const bar of document.querySelectorAll('#plot rect.hot')) bar.classList.remove('hot');
  if (!span) {
    $('hover').textContent = 'hover a token: its recurrences and exit value';
    return;
  }
  $('hover').textContent = `token ${Number(span.dataset.index) + 1}: ${span.title}`;
  if (span.parentElement === plot.answer) {
    const bar = document.querySelectorAll('#plot rect')[Number(span.dataset.index)];
    if (bar) bar.classList.add('hot');
  }
}

function drawLegend(max) {
  const stops = [];
  for (let i = 0; i <= 8; i++) stops.push(shade(1 + (max - 1) * i / 8, max));
  $('legend-bar').style.background = `linear-gradient(to right, ${stops.join(', ')})`;
  $('legend-max').textContent = `${max} steps`;
}

// ---- the conversation ----

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  $('log').append(div);
  $('log').scrollTop = $('log').scrollHeight;
  return div;
}

function addToken(div, text, steps, exitValue, criterion, max) {
  const span = document.createElement('span');
  span.className = text === '' ? 'tok empty' : 'tok';
  span.textContent = text;
  span.dataset.steps = String(steps);
  span.dataset.exit = exitValue === null || exitValue === undefined ? '' : String(exitValue);
  span.style.background = shade(steps, max);
  let tip = `${steps} recurrence${steps === 1 ? '' : 's'}`;
  if (criterion && span.dataset.exit !== '') {  // argmax-stability counts steps: an integer
    const v = Number(exitValue);
    tip += `; ${criterion} = ${Number.isInteger(v) ? v : v.toPrecision(4)}`;
  }
  else if (criterion) tip += `; ${criterion}: no check ran`;
  if (text === '') tip += ' (no text of its own)';
  span.title = tip;
  span.dataset.index = String(plot.steps.length);
  div.append(span);
  plot.steps.push(steps);
  drawPlot();
  $('log').scrollTop = $('log').scrollHeight;
}

// Server-sent events: calls onData with each `data:` payload (a complete event at a time).
async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart()).join('\n');
      if (data !== '' && onData(data) === false) return;
    }
  }
  if (buf.trim() !== '') throw new Error('the stream ended in the middle of an event');
}

function setRunning(controller) {
  running = controller;
  $('send').disabled = !!controller;
  $('stop').disabled = !controller;
  document.body.dataset.state = controller ? 'streaming' : 'idle';
}

async function send() {
  const text = $('prompt').value;
  if (!text.trim() || running) return;
  clearError();
  if (!model && !(await loadModel())) return;
  let body;
  conversation.push({ role: 'user', content: text });
  try {
    body = buildRequest();
  } catch (e) {
    conversation.pop();
    showError(e.message);
    return;
  }
  $('prompt').value = '';
  addMessage('user', text);
  const div = addMessage('assistant', '');
  const max = body.num_steps;
  const criterion = body.exit_criterion || null;
  plot.steps = [];
  plot.max = max;
  plot.answer = div;
  drawLegend(max);
  drawPlot();
  const controller = new AbortController();
  setRunning(controller);
  setStatus('generating…');
  let answer = '', usage = null, finish = null, failed = null, ended = false;
  try {
    const res = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) throw new Error(await errorOf(res));
    await readEvents(res, (data) => {
      if (data === '[DONE]') {
        ended = true;
        return false;
      }
      const chunk = JSON.parse(data);
      if (chunk.error) {
        failed = chunk.error.message || JSON.stringify(chunk.error);
        return true;
      }
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices || []) {
        if (c.finish_reason) finish = c.finish_reason;
        const piece = (c.delta && c.delta.content) || '';
        answer += piece;
        if (c.iterations === undefined) {  // text after the last token (held back until the end)
          if (piece) div.append(document.createTextNode(piece));
          continue;
        }
        addToken(div, piece, c.iterations, c.exit_value, criterion, max);
      }
      return true;
    });
    if (failed) throw new Error(failed);
    if (!ended) throw new Error('the stream ended without [DONE]');
  } catch (e) {
    if (e.name === 'AbortError') failed = 'stopped';
    else showError(`The answer failed: ${e.message}`);
    failed = failed || e.message;
  } finally {
    setRunning(null);
  }
  if (!div.isConnected) return;  // "New chat" during the answer: it belongs to no conversation
  // A failed answer leaves the conversation as it was; a stopped one keeps what came.
  if (failed && failed !== 'stopped') conversation.pop();
  else conversation.push({ role: 'assistant', content: answer });
  const stats = document.createElement('span');
  stats.className = 'stats';
  const n = plot.steps.length;
  const mean = usage ? usage.mean_iterations_per_token : (n ? plot.steps.reduce((a, b) => a + b, 0) / n : 0);
  stats.textContent = `${n} tokens, mean ${mean.toFixed(2)} recurrences per token` +
    (criterion ? `, exit ${criterion}` : `, fixed depth ${max}`) +
    (finish ? `, finish: ${finish}` : '') + (failed ? ` (${failed})` : '');
  div.append(stats);
  div.dataset.done = failed ? 'error' : 'ok';
  setStatus(failed ? '' : `${n} tokens`);
}

function init() {
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  $('stop').addEventListener('click', () => running && running.abort());
  $('clear').addEventListener('click', () => {
    if (running) running.abort();
    conversation.length = 0;
    $('log').replaceChildren();
    plot.steps = [];
    plot.answer = null;
    drawPlot();
    hoverToken(null);
    clearError();
  });
  $('controls').addEventListener('submit', (e) => e.preventDefault());
  $('log').addEventListener('mouseover', (e) => hoverToken(e.target.closest('.tok')));
  $('log').addEventListener('mouseleave', () => hoverToken(null));
  $('api_key').addEventListener('change', loadModel);
  $('num_steps').addEventListener('change', () => drawLegend(Number($('num_steps').value) || 1));
  drawLegend(Number($('num_steps').value) || 1);
  drawPlot();
  hoverToken(null);
  setRunning(null);
  loadModel();
}

init();
