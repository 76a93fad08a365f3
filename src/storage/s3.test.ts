/**
 * The S3 driver against a real S3 API (moto_server on loopback, src/testing/moto.ts): the storage
 * contract three times (default sizes; tiny multipart thresholds so that puts and writers go
 * multipart; a store that ignores If-None-Match, imitated by a middleware that drops the header),
 * then what only S3 has: multipart uploads and their verification, the writer's temporary key,
 * create-only on retried requests, storage class and encryption headers, error kinds.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { StorageError } from './backend.js';
import { assertBytes, backendContract, listAll } from './contract.js';
import { S3Backend, type S3BackendOptions, parseS3Location } from './s3.js';
import { type RetrySettings, RetryBackend } from './retry.js';
import type { S3Settings } from './settings.js';
import { Rng } from '../testing/helpers.js';
import { MOTO_CREDENTIALS, type Moto, motoSkip, startMoto } from '../testing/moto.js';
import { freePort } from '../testing/pg.js';

const MiB = 1 << 20;
const BUCKET = 'holdfast-test';
/** Parts moto accepts in these tests (S3 itself requires 5 MiB). */
const SMALL_PART = 256 << 10;

Object.assign(process.env, MOTO_CREDENTIALS);

let motoStarting: Promise<Moto> | undefined;
function moto(): Promise<Moto> {
  motoStarting ??= startMoto({ buckets: [BUCKET], minPartSize: SMALL_PART });
  return motoStarting;
}
let prefixes = 0;
/** A fresh prefix per backend, so every test starts empty. */
function freshLocation(): string {
  return `s3://${BUCKET}/t${process.pid}-${++prefixes}/repo`;
}

async function backend(options: S3BackendOptions = {}, settings: Partial<S3Settings> = {}, location = freshLocation()): Promise<S3Backend> {
  const m = await moto();
  return new S3Backend(location, { ...m.settings, ...settings }, options);
}

/** A plain SDK client on moto, to look at what the driver stored. */
async function rawClient(extra: Partial<S3ClientConfig> = {}): Promise<S3Client> {
  const m = await moto();
  return new S3Client({ endpoint: m.endpoint, region: 'us-east-1', forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED', ...extra });
}

/** Every key below a location's prefix, hidden ones included. */
async function rawKeys(b: S3Backend): Promise<string[]> {
  const c = await rawClient();
  try {
    const prefix = b.location.slice(`s3://${BUCKET}/`.length) + '/';
    const out = await c.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
    return (out.Contents ?? []).map((o) => o.Key!.slice(prefix.length)).sort();
  } finally {
    c.destroy();
  }
}

async function openUploads(b: S3Backend): Promise<number> {
  const c = await rawClient();
  try {
    const prefix = b.location.slice(`s3://${BUCKET}/`.length) + '/';
    const out = await c.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: prefix }));
    return (out.Uploads ?? []).length;
  } finally {
    c.destroy();
  }
}

async function head(b: S3Backend, name: string): Promise<import('@aws-sdk/client-s3').HeadObjectCommandOutput> {
  const c = await rawClient();
  try {
    return await c.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `${b.location.slice(`s3://${BUCKET}/`.length)}/${name}` }));
  } finally {
    c.destroy();
  }
}

/** Make the client drop If-None-Match, as stores without conditional writes do. */
function ignoreIfNoneMatch(client: S3Client): void {
  client.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { headers?: Record<string, string> };
      if (req.headers) delete req.headers['if-none-match'];
      return next(args);
    },
    { step: 'build', name: 'dropIfNoneMatch' },
  );
}

const noCleanup = async (): Promise<void> => undefined;

describe('S3 driver (moto_server)', { skip: motoSkip() }, () => {
  after(async () => {
    if (motoStarting) await (await motoStarting).stop();
  });

  backendContract('s3', async () => ({ backend: await backend(), cleanup: noCleanup }), { concurrentPuts: 100 });

  backendContract(
    's3 multipart (1 MiB threshold, 256 KiB parts)',
    async () => ({ backend: await backend({ multipartThreshold: MiB, partSize: SMALL_PART, allowSmallParts: true }), cleanup: noCleanup }),
    { concurrentPuts: 50, largeObjectBytes: 6 * MiB },
  );

  backendContract(
    's3 store ignoring If-None-Match (create-only emulated)',
    async () => {
      const b = await backend({ configureClient: ignoreIfNoneMatch });
      assert.equal(await b.probeConditionalCreate(), false, 'the probe finds that the store ignores If-None-Match');
      assert.equal(b.capabilities.conditionalCreate, false);
      return { backend: b, cleanup: noCleanup };
    },
    { concurrentPuts: 50, largeObjectBytes: 4 * MiB },
  );

  describe('S3 only', () => {
    test('location parsing: bucket and prefix, invalid forms refused', () => {
      assert.deepEqual(parseS3Location('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
      assert.deepEqual(parseS3Location('s3://my-bucket/'), { bucket: 'my-bucket', prefix: '' });
      assert.deepEqual(parseS3Location('s3://my.bucket/a/b/'), { bucket: 'my.bucket', prefix: 'a/b' });
      for (const bad of ['s3://', 's3://ab', 's3://Upper', 's3://b-1/a//b', 's3://b-1/../x', 's3://b-1/.tmp-x/y', 's3://b-1/x?y=1', 'file:///x']) {
        assert.ok('error' in parseS3Location(bad), `${bad} is refused`);
      }
      assert.throws(() => new S3Backend('s3://ab'), (err: unknown) => err instanceof StorageError && err.kind === 'invalid');
      assert.equal(new S3Backend('s3://bucket-1/x/y/').location, 's3://bucket-1/x/y');
    });

    test('a multipart put (above the threshold) is stored in parts, verified, and read back by ranges', async () => {
      const b = await backend({ multipartThreshold: MiB, partSize: SMALL_PART, allowSmallParts: true });
      try {
        const rng = new Rng(601);
        const data = rng.bytes(3 * MiB + 12_345);
        // As several buffers whose boundaries are not the part boundaries.
        await b.put('data/ab/big', [data.subarray(0, 100), data.subarray(100, 2 * MiB + 7), data.subarray(2 * MiB + 7)], { createOnly: true });
        const h = await head(b, 'data/ab/big');
        assert.equal(h.ContentLength, data.length);
        assert.match(h.ETag ?? '', /-13"$/, 'a multipart ETag of 13 parts');
        assertBytes(await b.get('data/ab/big'), data, 'whole object');
        const rr = new Rng(602);
        for (let i = 0; i < 20; i++) {
          const offset = rr.int(data.length);
          const length = 1 + rr.int(Math.min(MiB, data.length - offset));
          assertBytes(await b.get('data/ab/big', { offset, length }), data.subarray(offset, offset + length), `range ${offset}+${length}`);
        }
        await assert.rejects(b.get('data/ab/big', { offset: data.length - 10, length: 11 }), { name: 'StorageError', kind: 'short-read' });
        await assert.rejects(b.put('data/ab/big', data, { createOnly: true }), { name: 'StorageError', kind: 'exists' });
        assert.equal(await openUploads(b), 0, 'no multipart upload is left open');
      } finally {
        await b.close();
      }
    });

    test('a writer past the threshold streams parts to a hidden key, then copies to its name and leaves nothing behind', async () => {
      const b = await backend({ multipartThreshold: MiB, partSize: SMALL_PART, allowSmallParts: true, partConcurrency: 2 });
      try {
        const rng = new Rng(603);
        const data = rng.bytes(5 * MiB + 999);
        const w = await b.openWriter();
        for (let off = 0; off < data.length; off += 300_001) {
          const piece = Buffer.from(data.subarray(off, off + 300_001));
          await w.write([piece]);
          piece.fill(0); // the caller reuses its buffer
          if (off > 2 * MiB) {
            const keys = await rawKeys(b);
            assert.ok(keys.length === 0 || keys.every((k) => !k.startsWith('data/')), 'nothing is visible under the final name before commit');
            assert.equal(await openUploads(b), 1, 'one multipart upload of the temporary key is open');
          }
        }
        assert.deepEqual(await listAll(b, ''), [], 'list shows nothing while writing');
        await w.commit('data/cd/packed');
        assertBytes(await b.get('data/cd/packed'), data, 'committed object');
        assert.deepEqual(await rawKeys(b), ['data/cd/packed'], 'the temporary key is gone');
        assert.equal(await openUploads(b), 0);
        assert.match((await head(b, 'data/cd/packed')).ETag ?? '', /-21"$/, 'copied over the same 21 part boundaries');

        // Abort after going multipart: nothing left.
        const w2 = await b.openWriter();
        await w2.write([rng.bytes(2 * MiB)]);
        await w2.abort();
        assert.deepEqual(await rawKeys(b), ['data/cd/packed']);
        assert.equal(await openUploads(b), 0, 'the aborted multipart upload is gone');

        // createOnly commit of a large writer onto an existing name.
        const w3 = await b.openWriter();
        await w3.write([rng.bytes(2 * MiB)]);
        await assert.rejects(w3.commit('data/cd/packed', { createOnly: true }), { name: 'StorageError', kind: 'exists' });
        assertBytes(await b.get('data/cd/packed'), data, 'the refused commit left the object intact');
        assert.deepEqual(await rawKeys(b), ['.tmp-conditional-create-probe', 'data/cd/packed'], 'nothing but the probe of If-None-Match support was added');
        assert.equal(await openUploads(b), 0);
      } finally {
        await b.close();
      }
    });

    test('create-only race of large writers: exactly one wins, on a store with and one without If-None-Match', async () => {
      const b = await backend({ multipartThreshold: MiB, partSize: SMALL_PART, allowSmallParts: true });
      try {
        const rng = new Rng(604);
        const contenders = Array.from({ length: 4 }, (_, i) => rng.bytes(MiB + SMALL_PART * (i + 1)));
        const writers = await Promise.all(contenders.map(() => b.openWriter()));
        await Promise.all(writers.map((w, i) => w.write([contenders[i]!])));
        const results = await Promise.allSettled(writers.map((w) => w.commit('locks/big-race', { createOnly: true })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        assert.equal(winners.length, 1, `one winner, got ${winners.length}`);
        for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as StorageError).kind, 'exists');
        assertBytes(await b.get('locks/big-race'), contenders[winners[0]!]!, "the winner's object");
        assert.deepEqual(await rawKeys(b), ['.tmp-conditional-create-probe', 'locks/big-race']);
        assert.equal(await openUploads(b), 0);
      } finally {
        await b.close();
      }
    });

    test('the If-None-Match probe: once per backend, hidden, and a store ignoring the header is detected', async () => {
      const honours = await backend();
      const ignores = await backend({ configureClient: ignoreIfNoneMatch }, {}, honours.location);
      try {
        assert.equal(honours.capabilities.conditionalCreate, true, 'assumed until probed');
        await honours.put('config', Buffer.from('x'), { createOnly: true });
        assert.equal(await honours.probeConditionalCreate(), true);
        assert.equal(await ignores.probeConditionalCreate(), false, 'an existing probe object accepted again: the header was ignored');
        assert.equal(ignores.capabilities.conditionalCreate, false);
        assert.deepEqual(await listAll(honours, ''), [{ name: 'config', size: 1 }], 'the probe object is never listed');
        // The emulation still refuses a name that exists.
        await assert.rejects(ignores.put('config', Buffer.from('y'), { createOnly: true }), { name: 'StorageError', kind: 'exists' });
        assert.deepEqual(await honours.get('config'), Buffer.from('x'));
      } finally {
        await honours.close();
        await ignores.close();
      }
    });

    test('a create-only put whose first attempt landed but whose answer was lost succeeds on the retry', async () => {
      let dropped = 0;
      const loseFirstAnswer = (client: S3Client): void => {
        client.middlewareStack.add(
          (next, context) => async (args) => {
            const result = await next(args);
            const input = args.input as { Key?: string; IfNoneMatch?: string };
            if (context.commandName === 'PutObjectCommand' && input.IfNoneMatch === '*' && input.Key?.endsWith('/wal/lost-answer') && dropped === 0) {
              dropped++;
              throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} });
            }
            return result;
          },
          { step: 'deserialize', name: 'loseFirstAnswer' },
        );
      };
      const b = await backend({ configureClient: loseFirstAnswer });
      try {
        const data = new Rng(605).bytes(10_000);
        await b.put('wal/lost-answer', data, { createOnly: true });
        assert.equal(dropped, 1, 'the first answer was dropped, so the SDK retried and got 412');
        assertBytes(await b.get('wal/lost-answer'), data, 'our object');
        await assert.rejects(b.put('wal/lost-answer', data, { createOnly: true }), { name: 'StorageError', kind: 'exists' }, 'a later create-only put still fails');
      } finally {
        await b.close();
      }
    });

    test('storage class and server-side encryption are sent with puts, multipart uploads and writers', async () => {
      for (const sse of [{ sse: 'AES256' }, { sse: 'aws:kms', sseKmsKeyId: 'arn:aws:kms:us-east-1:123456789012:key/holdfast-test' }]) {
        const b = await backend({ multipartThreshold: MiB, partSize: SMALL_PART, allowSmallParts: true }, { storageClass: 'STANDARD_IA', ...sse });
        try {
          const rng = new Rng(606);
          await b.put('small', rng.bytes(100));
          await b.put('large', rng.bytes(MiB + 5));
          const w = await b.openWriter();
          await w.write([rng.bytes(2 * MiB)]);
          await w.commit('written', { createOnly: true });
          for (const name of ['small', 'large', 'written']) {
            const h = await head(b, name);
            assert.equal(h.StorageClass, 'STANDARD_IA', `${name}: storage class`);
            assert.equal(h.ServerSideEncryption, sse.sse, `${name}: encryption`);
            if (sse.sseKmsKeyId) assert.equal(h.SSEKMSKeyId, sse.sseKmsKeyId, `${name}: KMS key`);
          }
        } finally {
          await b.close();
        }
      }
    });

    test('errors have kinds and clear messages: missing bucket, unreachable endpoint, no credentials, wrong credentials', async () => {
      const m = await moto();
      const missing = new S3Backend('s3://no-such-bucket-here/x', m.settings);
      try {
        for (const call of [() => missing.get('config'), () => missing.put('config', Buffer.from('x')), () => listAll(missing, '')]) {
          await assert.rejects(call, (err: unknown) => {
            assert.ok(err instanceof StorageError, String(err));
            assert.equal(err.kind, 'io');
            assert.match(err.message, /bucket no-such-bucket-here at http:\/\/127\.0\.0\.1:\d+ does not exist \(NoSuchBucket\)/);
            return true;
          });
        }
      } finally {
        await missing.close();
      }

      const port = await freePort();
      const down = new S3Backend(`s3://${BUCKET}/x`, { endpoint: `http://127.0.0.1:${port}`, pathStyle: true, region: 'us-east-1' }, { maxAttempts: 1 });
      try {
        await assert.rejects(down.get('config'), (err: unknown) => err instanceof StorageError && err.kind === 'transient' && err.message.includes(`127.0.0.1:${port}`) && !err.permanent);
      } finally {
        await down.close();
      }

      // No credentials anywhere in the chain.
      const saved = { ...process.env };
      for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
      Object.assign(process.env, { AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials', AWS_CONFIG_FILE: '/nonexistent/config', AWS_EC2_METADATA_DISABLED: 'true' });
      const anonymous = new S3Backend(`s3://${BUCKET}/x`, m.settings);
      try {
        await assert.rejects(anonymous.get('config'), (err: unknown) => err instanceof StorageError && err.kind === 'permission' && /AWS_ACCESS_KEY_ID/.test(err.message));
      } finally {
        await anonymous.close();
        for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
        Object.assign(process.env, saved);
      }

      // A server that checks access keys (moto with authentication on) refuses unknown ones.
      const strict = await startMoto({ authenticate: true });
      const wrong = new S3Backend(`s3://${BUCKET}/x`, strict.settings);
      try {
        await assert.rejects(wrong.get('config'), (err: unknown) => err instanceof StorageError && err.kind === 'permission' && /InvalidAccessKeyId|403/.test(err.message) && err.permanent);
        await assert.rejects(wrong.put('x', Buffer.from('x')), { name: 'StorageError', kind: 'permission' });
      } finally {
        await wrong.close();
        await strict.stop();
      }
    });

    test('keys that are not valid names (directory markers, foreign keys with //) are not listed', async () => {
      const b = await backend();
      const c = await rawClient();
      try {
        const { PutObjectCommand } = await import('@aws-sdk/client-s3');
        const root = b.location.slice(`s3://${BUCKET}/`.length);
        for (const k of ['dir/', 'a//b', 'x/.tmp-writer-123', '.tmp-probe']) await c.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${root}/${k}`, Body: Buffer.from('z') }));
        await b.put('dir/real', Buffer.from('ok'));
        assert.deepEqual(await listAll(b, ''), [{ name: 'dir/real', size: 2 }]);
      } finally {
        c.destroy();
        await b.close();
      }
    });
  });

  describe('behind the retry wrapper (as openBackend uses it: one SDK attempt per request)', () => {
    const FAST: RetrySettings = { requestTimeoutMs: 800, deadlineMs: 2_500, maxAttempts: 20, baseDelayMs: 5, maxDelayMs: 50 };

    test('503 SlowDown answers are retried until the write lands, once, whole', async () => {
      let throttled = 0;
      const slowDown = (client: S3Client): void => {
        client.middlewareStack.add(
          (next, context) => async (args) => {
            if (context.commandName === 'PutObjectCommand' && throttled < 3) {
              throttled++;
              throw Object.assign(new Error('Please reduce your request rate.'), { name: 'SlowDown', $fault: 'server', $metadata: { httpStatusCode: 503 } });
            }
            return next(args);
          },
          { step: 'finalizeRequest', name: 'slowDown' },
        );
      };
      const b = await backend({ maxAttempts: 1, configureClient: slowDown });
      const r = new RetryBackend(b, FAST);
      try {
        const data = new Rng(611).bytes(300_000);
        await r.put('wal/throttled', data, { createOnly: true });
        assert.equal(throttled, 3);
        assertBytes(await r.get('wal/throttled'), data, 'the object after three 503s');
        assert.deepEqual((await rawKeys(b)).filter((k) => k.includes('throttled')).length, 1, 'one object, no leftovers');
      } finally {
        await r.close();
      }
    });

    test('a hung S3 endpoint fails the operation within the deadline with a clear, retryable error; it works again afterwards', async () => {
      const m = await moto();
      const b = await backend({ maxAttempts: 1 });
      const r = new RetryBackend(b, FAST);
      try {
        await r.put('before', Buffer.from('x'));
        m.pause();
        try {
          await assert.rejects(r.get('before'), (e: unknown) => e instanceof StorageError && e.kind === 'transient' && /despite retries/.test(e.message) && typeof e.hint === 'string' && /--storage-deadline/.test(e.hint));
        } finally {
          m.resume();
        }
        assert.deepEqual(await r.get('before'), Buffer.from('x'));
      } finally {
        await r.close();
      }
    });
  });
});
