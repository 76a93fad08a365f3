/**
 * Loading node-postgres (pgClientClass) must not load Node's bundled fetch implementation: its
 * Cloudflare probe constructs a global `Response` when the module loads, which on Node pulls in
 * undici with http, http2, tls and zlib (~50 ms of CPU per PostgreSQL command). Checked in a fresh
 * process, whose list of loaded built-in modules is not shared with the test runner's.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';

const script = `
const { pgClientClass } = await import(${JSON.stringify(new URL('./connection.js', import.meta.url).href)});
const Client = await pgClientClass();
const loaded = process.moduleLoadList.filter((m) => /undici|_http_client|http2/.test(m));
const again = await pgClientClass();
console.log(JSON.stringify({ client: typeof Client, same: again === Client, loaded, response: typeof Response, ok: new Response('x').ok }));
`;

test('loading the pg client leaves undici (fetch) unloaded, and Response as it was', () => {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { client: string; same: boolean; loaded: string[]; response: string; ok: boolean };
  assert.equal(r.client, 'function');
  assert.equal(r.same, true, 'loaded once');
  assert.deepEqual(r.loaded, [], 'no fetch implementation was loaded for the probe');
  assert.equal(r.response, 'function', 'the global Response is back');
  assert.equal(r.ok, true, 'and works');
});
