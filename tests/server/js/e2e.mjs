// End-to-end scenarios through the official openai client. Usage: node e2e.mjs BASE_URL MODEL KEY
// Prints one JSON object with what each scenario returned; the gtest driver checks it.
import OpenAI from 'openai';

const [baseURL, model, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const greedy = { temperature: 0, seed: 0 };

async function chat(extra) {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'hello world' }], max_tokens: 8, ...greedy, ...extra });
  return { text: r.choices[0].message.content, finish: r.choices[0].finish_reason,
           usage: r.usage, logprobs: r.choices[0].logprobs, object: r.object };
}

async function chatStream(extra) {
  const s = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'hello world' }], max_tokens: 8, ...greedy,
    stream: true, stream_options: { include_usage: true }, ...extra });
  let text = '', finish = null, usage = null, chunks = 0, role = null;
  for await (const c of s) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      if (ch.delta?.role) role = ch.delta.role;
      if (ch.delta?.content) text += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  return { text, finish, usage, chunks, role };
}

async function complete(extra) {
  const r = await client.completions.create({
    model, prompt: 'hello world', max_tokens: 8, ...greedy, ...extra });
  return { text: r.choices[0].text, finish: r.choices[0].finish_reason, usage: r.usage,
           logprobs: r.choices[0].logprobs, object: r.object };
}

async function completeStream(extra) {
  const s = await client.completions.create({
    model, prompt: 'hello world', max_tokens: 8, ...greedy, stream: true, ...extra });
  let text = '', finish = null, chunks = 0, iterations = [];
  for await (const c of s) {
    chunks++;
    for (const ch of c.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
      if (ch.iterations !== undefined) iterations.push(ch.iterations);
    }
  }
  return { text, finish, chunks, iterations };
}

const out = {};
out.models = (await client.models.list()).data.map((m) => m.id);
out.chat = await chat({ num_steps: 4 });
out.chat_stream = await chatStream({ num_steps: 4 });
out.completion = await complete({ num_steps: 4 });
out.completion_stream = await completeStream({ num_steps: 4, return_iterations: true });
out.steps1 = await complete({ num_steps: 1, return_iterations: true, max_tokens: 12 });
out.steps8 = await complete({ num_steps: 8, return_iterations: true, max_tokens: 12 });
out.exit_kl = await complete({ exit_criterion: 'kl', exit_threshold: 0.01, max_steps: 16,
                               return_iterations: true, max_tokens: 12 });
out.logprobs = await complete({ num_steps: 4, logprobs: 3, echo: true, max_tokens: 2 });
out.chat_logprobs = await chat({ num_steps: 4, logprobs: true, top_logprobs: 2, max_tokens: 3 });
try {
  await client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 });
  out.bad_model = 'no error';
} catch (e) {
  out.bad_model = { status: e.status, type: e.error?.type ?? e.type, code: e.code };
}
console.log(JSON.stringify(out));
