// The real OpenAI JavaScript SDK (the `openai` npm package, pinned in package.json and
// package-lock.json) against `sluice proxy`: the same scenario as
// crates/sluice/tests/python/openai_burst.py, for the Node client.
//
// Run by crates/sluice/tests/openai_js.rs (scripts/test runs `npm ci` here first). By hand:
//
//   node openai_burst.mjs --base-url http://127.0.0.1:8090/v1 [--requests 150] [--concurrency 50]
//
// It sends a burst of chat completions from many concurrent callers through the proxy with the
// SDK's own retries off (maxRetries: 0), so any 429 the proxy let through would surface as a
// RateLimitError, then one streamed completion with stream_options.include_usage, timing each
// chunk as it arrives. It prints one JSON object with what happened, as its last line:
//
//   {"openai_version": "...", "node_version": "v20...", "requests": 150, "ok": 150,
//    "rate_limited": 0, "errors": [], "elapsed_s": 2.2, "slowest_s": 1.0,
//    "stream": {"chunks": 8, "content": "tok tok ...", "usage": 59, "first_s": 0.02,
//    "last_s": 0.73}}
//
// and exits 0; it exits 1 only when the script itself breaks (the streamed request fails, say),
// with the error on stderr. Every request is bounded by the SDK's `timeout`.

import OpenAI, { APIConnectionError, APIError, RateLimitError } from 'openai';
import { VERSION } from 'openai/version';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';

const { values: opts } = parseArgs({
  options: {
    'base-url': { type: 'string' },
    requests: { type: 'string', default: '150' },
    concurrency: { type: 'string', default: '50' },
    model: { type: 'string', default: 'gpt-fake' },
    'timeout-ms': { type: 'string', default: '60000' },
  },
});
const requests = Number.parseInt(opts.requests, 10);
const concurrency = Number.parseInt(opts.concurrency, 10);
const timeout = Number.parseInt(opts['timeout-ms'], 10);
if (!opts['base-url'] || !(requests > 0) || !(concurrency > 0) || !(timeout > 0)) {
  console.error(
    'usage: node openai_burst.mjs --base-url http://HOST:PORT/v1 [--requests N] [--concurrency N] [--model M] [--timeout-ms MS]',
  );
  process.exit(2);
}

// As a user would write it. The key only has to look like one: the proxy passes it through.
const client = new OpenAI({
  baseURL: opts['base-url'],
  apiKey: 'sk-test-not-a-real-key',
  maxRetries: 0,
  timeout,
});

const seconds = (ms) => Math.round(ms) / 1000;
const short = (error) => String(error?.message ?? error).slice(0, 200);

/** One chat completion: ["ok", total tokens] or [kind of failure, detail]. */
async function one(i) {
  try {
    const completion = await client.chat.completions.create({
      model: opts.model,
      messages: [{ role: 'user', content: `request ${i}` }],
      max_tokens: 16,
    });
    return ['ok', completion.usage?.total_tokens ?? null];
  } catch (error) {
    // RateLimitError and APIConnectionError are APIErrors too: the narrow ones first.
    if (error instanceof RateLimitError) return ['429', short(error)];
    if (error instanceof APIConnectionError) return ['connection', short(error)];
    if (error instanceof APIError) return [`status ${error.status}`, short(error)];
    return ['other', short(error)];
  }
}

// `concurrency` callers, each taking the next request number until none are left, like the
// Python script's thread pool.
const results = new Array(requests);
let next = 0;
let slowest = 0;
const started = performance.now();
await Promise.all(
  Array.from({ length: Math.min(concurrency, requests) }, async () => {
    while (next < requests) {
      const i = next++;
      const sent = performance.now();
      results[i] = await one(i);
      slowest = Math.max(slowest, performance.now() - sent);
    }
  }),
);
const elapsed = performance.now() - started;

const streamStarted = performance.now();
const stream = await client.chat.completions.create({
  model: opts.model,
  messages: [{ role: 'user', content: 'Stream me a story.' }],
  max_tokens: 50,
  stream: true,
  stream_options: { include_usage: true },
});
const arrivals = [];
let content = '';
let usage = null;
for await (const chunk of stream) {
  arrivals.push(performance.now() - streamStarted);
  if (chunk.choices.length > 0) content += chunk.choices[0].delta?.content ?? '';
  if (chunk.usage) usage = chunk.usage.total_tokens;
}

const summary = {
  openai_version: VERSION,
  node_version: process.version,
  requests: results.length,
  ok: results.filter(([kind]) => kind === 'ok').length,
  rate_limited: results.filter(([kind]) => kind === '429').length,
  errors: results
    .filter(([kind]) => kind !== 'ok')
    .slice(0, 5)
    .map(([kind, detail]) => `${kind}: ${detail}`),
  elapsed_s: seconds(elapsed),
  slowest_s: seconds(slowest),
  stream: {
    chunks: arrivals.length,
    content,
    usage,
    first_s: arrivals.length > 0 ? seconds(arrivals[0]) : null,
    last_s: arrivals.length > 0 ? seconds(arrivals.at(-1)) : null,
  },
};
console.log(JSON.stringify(summary));
