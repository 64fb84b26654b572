// Generates library_cases.jsonl: random texts weighted towards what the Huginn-0125 tokenizer's
// split pattern ("aeolian" in its authors' script) treats specially, with the ids the Hugging Face
// library gives them. The tokenizer is tests/data/tokenizers/cl100k/tokenizer.json (the layout the
// authors' export writes: Split Removed + invert, ByteLevel without regex, no normalizer) with the
// Split pattern replaced by aeolian's; "removed" are its ids, "isolated" those with Split's
// behavior Isolated (invert false), which keeps the text no alternative matches.
//
//   cd bench/js && npm ci && cd ../.. && node tests/data/aeolian/gen_library_cases.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '../../..');
const { Tokenizer } = createRequire(path.join(root, 'bench/js/'))('tokenizers');

// get_regex_from_normalization_rule_name("aeolian"), scripts/tokenizer_generation.py of
// seal-rg/recurrent-pretraining (its class ['' ʼ]: U+0027 twice and U+02BC), character for character.
const AEOLIAN = readFileSync(path.join(here, 'aeolian.regex'), 'utf8');

const FRAGMENTS = ['\\n', '\\ne', '\\newcommand', '\\newline', '\\nabla', '\\neq', '\\geq', '\\not', '\\notag',
  '\\nonumber', '\\ormalsize', 'ag', '\\alpha', '\\', '\\{', '\\}', '\\[', '\\]', '\n', '\n\n', ' ', ' ', '\t',
  '\r', '  ', '0', '7', '12', '\u0663', '\u00B2', 'st', 'nd', 'rd', 'th', "'", '\u02BC', '\u2019', "don't",
  'x', '_', '==', '!=', '<=', '>=', '<<', '>>', '**', '//', '+=', '-=', '*=', '/=', '%=', '&=', '|=', '^=',
  '<<=', '>>=', '**=', '//=', ':=', '++', '--', '|', '+', '-', '*', '\u2014', '=', '^', '.', ',', '!', '?',
  ';', '(', ')', '{', '}', '[', ']', '$', '$$', '`', '"', '#', '<0x', '<0x1', '<0xAf>', '>', '\u00A9',
  '\u2211', '\u{1F600}', '\u0301', '\u200B', '\x01', '\u00AD', '\u{10D4A}', '\u{1E4D0}', '\u1C89',
  '\u203F', '\u2167', '\u24B6', '\u{1F130}', '\u00BD', '\u0903', '\u200D', '\u00A0', '\u3000', '\u0085'];
const ASCII = "aAsStTrReEvVmMlLdDxyzQ0123456789 '''\r\n\t/.,;:!?-_()[]{}\"#$%&*+<=>@\\^`|~";

let seed = 20261206;  // mulberry32
const rand = () => {
  seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (n) => Math.floor(rand() * n);
const randomChar = () => {
  const r = rand();
  if (r < 0.5) return ASCII[pick(ASCII.length)];
  if (r < 0.7) return String.fromCodePoint(pick(0x800));
  for (;;) {
    const c = pick(0x110000);
    if (c < 0xD800 || c > 0xDFFF) return String.fromCodePoint(c);
  }
};

const json = JSON.parse(readFileSync(path.join(root, 'tests/data/tokenizers/cl100k/tokenizer.json'), 'utf8'));
const split = json.pre_tokenizer.pretokenizers[0];
split.pattern.Regex = AEOLIAN;
const removed = Tokenizer.fromString(JSON.stringify(json));
split.behavior = 'Isolated';
split.invert = false;
const isolated = Tokenizer.fromString(JSON.stringify(json));

const lines = [];
for (let k = 0; k < 800; ++k) {
  let text = '';
  for (let n = pick(48); n > 0; --n) text += rand() < 0.5 ? FRAGMENTS[pick(FRAGMENTS.length)] : randomChar();
  const ids = async (tok) => Array.from((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
  lines.push(JSON.stringify({ text, removed: await ids(removed), isolated: await ids(isolated) }));
}
writeFileSync(path.join(here, 'library_cases.jsonl'), lines.join('\n') + '\n');
console.log(`${lines.length} cases written`);
