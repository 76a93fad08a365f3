/**
 * S3-compatible object storage driver: `s3://bucket/prefix`, through the official
 * `@aws-sdk/client-s3`, which is imported on first use only (it costs about 60 ms of start-up, which
 * commands on local repositories must not pay). docs/design.md §19 is the specification; in short:
 *
 * Addressing. Object `name` is stored under the key `prefix/name` (or `name` without a prefix).
 * The endpoint, region, path-style addressing, storage class and server-side encryption come
 * from `S3Settings`; credentials from the SDK's standard chain (environment, shared config and
 * credential files, SSO, web identity, container and instance metadata). Without a configured
 * region the SDK's own resolution is used, else `us-east-1` (AWS redirects are followed).
 *
 * Durability. The server's acknowledgement of a PUT (or of CompleteMultipartUpload) is the
 * durability point; `durable: false` changes nothing. S3 makes a PUT visible whole or not at all,
 * so puts are atomic without temporary names.
 *
 * Uploads are verified. A single PUT (objects up to `multipartThreshold`, 32 MiB by default)
 * sends Content-Length and Content-MD5, which the server checks; larger objects go as a multipart
 * upload whose parts (`partSize`, 16 MiB by default, at most `partConcurrency` in flight) each
 * carry their Content-MD5, and whose assembled ETag (MD5 of the part digests, "-N") and size
 * (HeadObject) are compared with what was sent. A failed multipart upload is aborted.
 *
 * Streaming writes (packs). An `openWriter()` keeps up to `multipartThreshold` bytes in memory
 * and commits them with one PUT. Beyond that, it streams parts into a multipart upload of a
 * temporary key `prefix/.tmp-writer-<random>` (the final name, the pack's hash, is known only at
 * the end); `commit(name)` completes it and copies it server-side to `name` (UploadPartCopy over
 * the same part boundaries, then CompleteMultipartUpload, conditional when create-only), then
 * deletes the temporary object. Memory per writer stays under the threshold plus
 * `partConcurrency + 1` parts. A crash may leave a `.tmp-*` object (never listed) or an
 * incomplete multipart upload: buckets should have a lifecycle rule aborting incomplete
 * multipart uploads after a day.
 *
 * Create-only. `put(…, {createOnly: true})` sends `If-None-Match: *` (PutObject and
 * CompleteMultipartUpload); a 412 becomes `StorageError('exists')`. When the SDK had to retry the
 * request, a 412 may answer our own first attempt: the object is then compared with ours (ETag
 * and size) and counted as created when it matches.
 *
 * Fallback for stores that ignore If-None-Match. Before the first create-only put the driver
 * probes once per process: it writes the hidden object `prefix/.tmp-conditional-create-probe`
 * with If-None-Match twice (once only when it already exists: the first attempt gets 412). A
 * store that accepts both writes, or answers 501, ignores the condition. The driver then says so
 * (`capabilities.conditionalCreate` becomes false) and emulates create-only by HeadObject before
 * the PUT and HeadObject after it (the ETag must still be ours, else `exists`). That refuses
 * every create-only put of a name that existed before it started (re-`init`, a second push of a
 * WAL file with other content), but two writers racing within one round trip can both succeed.
 * Repository locks do not rely on it (their names are random; exclusion comes from listing after
 * creating, docs/design.md §15).
 *
 * Reads. `get` with a range sends `Range: bytes=a-b`; a 416 or a body shorter than asked is
 * `short-read`; an empty range is answered from HeadObject. `list` pages through ListObjectsV2
 * and never yields keys that are not valid names (`.tmp-*` segments, directory markers, `//`).
 * Listing is taken to be strongly consistent (AWS S3 since December 2020; the lock protocol needs
 * it).
 *
 * Errors. NoSuchKey / 404 → `not-found`; 403, AccessDenied, bad keys or signatures and missing
 * credentials → `permission`; 503 SlowDown, 500, throttling, timeouts and connection resets →
 * `transient` (after the SDK's own retries, `maxAttempts`, 4 by default); NoSuchBucket → `io` with
 * a message naming the bucket and endpoint; anything else → `io`.
 *
 * The SDK is told to add checksums only when an operation requires them
 * (`requestChecksumCalculation`/`responseChecksumValidation: 'WHEN_REQUIRED'`): the default
 * aws-chunked uploads with trailing CRC32 are not understood by several S3-compatible stores, and
 * Content-MD5 already covers every upload.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { type Backend, type ByteRange, type Capabilities, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, RESERVED_PREFIX, StorageError, type StorageErrorKind, checkName, putParts, putSize } from './backend.js';
import type { S3Settings } from './settings.js';

type Sdk = typeof import('@aws-sdk/client-s3');

let sdkLoading: Promise<Sdk> | undefined;
/** The SDK, imported on first use. */
function loadSdk(): Promise<Sdk> {
  // The SDK warns on every run under Node 20 that its releases from 2027 will need Node 22; the
  // version holdfast pins supports Node 20, so the warning only alarms operators (cron mail).
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  sdkLoading ??= import('@aws-sdk/client-s3');
  return sdkLoading;
}

const MiB = 1 << 20;
/** S3's limits: parts of at least 5 MiB (except the last), at most 10,000 parts. */
const MIN_PART = 5 * MiB;
const MAX_PARTS = 10_000;
/** Largest source range one UploadPartCopy may copy. */
const MAX_COPY_PART = 5 * 1024 * MiB;
/** Listing pages followed at most (10^9 objects at 1000 per page): a guard against a looping server. */
const MAX_LIST_PAGES = 1_000_000;
const PROBE_NAME = `${RESERVED_PREFIX}conditional-create-probe`;
/** Temporary keys of writers that went multipart. */
const WRITER_PREFIX = `${RESERVED_PREFIX}writer-`;

export interface S3BackendOptions {
  /** Objects up to this size go in one PUT; larger ones as a multipart upload (default 32 MiB). */
  readonly multipartThreshold?: number;
  /** Part size of multipart uploads (default 16 MiB; S3 requires at least 5 MiB). */
  readonly partSize?: number;
  /** Parts of one upload in flight at once (default 4). */
  readonly partConcurrency?: number;
  /** Requests the driver asks wrappers to allow at once (default 16). */
  readonly maxConcurrency?: number;
  /** Attempts per request including the SDK's retries (default 4). */
  readonly maxAttempts?: number;
  /** A socket without activity this long fails the request (default 120 s; openBackend: --storage-timeout). */
  readonly socketTimeoutMs?: number;
  /** Allow parts smaller than S3's 5 MiB minimum (tests against a server configured for it). */
  readonly allowSmallParts?: boolean;
  /** Called with the client once it exists (tests add middleware to imitate other stores). */
  readonly configureClient?: (client: S3Client) => void;
}

/** Bucket and key prefix of an `s3://bucket/prefix` location, or a message saying what is wrong. */
export function parseS3Location(location: string): { bucket: string; prefix: string } | { error: string } {
  const m = /^s3:\/\/([^/?#]*)(\/[^?#]*)?$/i.exec(location);
  if (!m) return { error: 'expected s3://BUCKET or s3://BUCKET/PREFIX (no query or fragment)' };
  const bucket = m[1]!;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return { error: `"${bucket}" is not a valid bucket name (3 to 63 lower-case letters, digits, dots and hyphens)` };
  const prefix = (m[2] ?? '').replace(/^\/+/, '').replace(/\/+$/, '');
  if (prefix !== '') {
    const bad = prefix.split('/').find((s) => s === '' || s === '.' || s === '..' || s.startsWith(RESERVED_PREFIX));
    if (bad !== undefined) return { error: `the prefix "${prefix}" has an empty, "." or ".." segment or one starting with ${RESERVED_PREFIX}` };
  }
  return { bucket, prefix };
}

interface Connected {
  readonly sdk: Sdk;
  readonly client: S3Client;
}

/** Parts of an upload: number, ETag as the server returned it, MD5 of the bytes. */
interface UploadedPart {
  readonly PartNumber: number;
  readonly ETag: string;
  readonly md5: Buffer;
}

export class S3Backend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities;
  readonly bucket: string;
  /** '' or 'prefix/'. */
  /** @internal */
  readonly root: string;
  /** @internal */
  readonly threshold: number;
  /** @internal */
  readonly partSize: number;
  /** @internal */
  readonly partConcurrency: number;
  private connecting: Promise<Connected> | undefined;
  /** Whether the store honours If-None-Match: undefined until probed. */
  private conditional: boolean | undefined;
  private probing: Promise<boolean> | undefined;
  private closed = false;

  constructor(
    location: string,
    private readonly settings: S3Settings = {},
    private readonly options: S3BackendOptions = {},
  ) {
    const parsed = parseS3Location(location);
    if ('error' in parsed) throw new StorageError('invalid', location, '', `invalid S3 location ${location}: ${parsed.error}`);
    this.bucket = parsed.bucket;
    this.root = parsed.prefix === '' ? '' : `${parsed.prefix}/`;
    this.location = `s3://${parsed.bucket}${parsed.prefix === '' ? '' : `/${parsed.prefix}`}`;
    const minPart = options.allowSmallParts ? 1 : MIN_PART;
    this.partSize = Math.max(minPart, options.partSize ?? 16 * MiB);
    this.threshold = Math.max(this.partSize, options.multipartThreshold ?? 32 * MiB);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    const self = this;
    this.capabilities = {
      // True until a probe found that the store ignores If-None-Match (see the header).
      get conditionalCreate(): boolean {
        return self.conditional !== false;
      },
      maxConcurrency: Math.max(1, options.maxConcurrency ?? 16),
      persistent: true,
    };
  }

  // ------------------------------------------------------------ client, keys, errors

  /** @internal For S3Writer and Multipart, as are the other members marked so. */
  connect(): Promise<Connected> {
    if (this.closed) return Promise.reject(new StorageError('invalid', this.location, '', `the S3 backend for ${this.location} is closed`));
    this.connecting ??= (async () => {
      const sdk = await loadSdk();
      const s = this.settings;
      const config: S3ClientConfig = {
        forcePathStyle: s.pathStyle ?? false,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        followRegionRedirects: true,
        maxAttempts: this.options.maxAttempts ?? 4,
        requestHandler: { connectionTimeout: Math.min(10_000, this.options.socketTimeoutMs ?? 10_000), socketTimeout: this.options.socketTimeoutMs ?? 120_000 },
        ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      };
      const region = s.region || process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'];
      let client = new sdk.S3Client(region ? { ...config, region } : config);
      if (!region) {
        try {
          await client.config.region(); // the SDK's own resolution: shared config file, profile
        } catch {
          client.destroy();
          client = new sdk.S3Client({ ...config, region: 'us-east-1' });
        }
      }
      this.options.configureClient?.(client);
      return { sdk, client };
    })();
    this.connecting.catch(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** @internal */
  key(name: string, allowPrefix = false): string {
    checkName(this.location, name, allowPrefix);
    return this.root + name;
  }

  private where(): string {
    return this.settings.endpoint ? ` at ${this.settings.endpoint}` : '';
  }

  /** A StorageError for an SDK or network error while doing `what` to `name`. */
  /** @internal */
  wrap(err: unknown, name: string, what: string): StorageError {
    if (err instanceof StorageError) return err;
    const e = (err ?? {}) as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const code = e.Code ?? e.name ?? e.code ?? 'Error';
    const status = e.$metadata?.httpStatusCode;
    const detail = `${code}${status !== undefined ? ` (HTTP ${status})` : ''}${e.message && e.message !== code && e.message !== 'UnknownError' ? `: ${e.message}` : ''}`;
    const make = (kind: StorageErrorKind, message: string, hint?: string): StorageError => new StorageError(kind, this.location, name, message, { cause: err, hint });
    if (code === 'NoSuchBucket') {
      return make('io', `bucket ${this.bucket}${this.where()} does not exist (NoSuchBucket) while trying to ${what} ${name}`, 'Create the bucket, or correct the bucket in --repo, --s3-endpoint or --s3-region.');
    }
    if (code === 'NoSuchKey' || code === 'NotFound' || status === 404) return make('not-found', `${name} not found in ${this.location}`);
    if (code === 'CredentialsProviderError' || /credential/i.test(code) && status === undefined) {
      return make(
        'permission',
        `cannot ${what} ${name} in ${this.location}: no AWS credentials (${e.message ?? code}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or another source of the AWS credential chain`,
        'Give holdfast credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, or an instance, container or web-identity role.',
      );
    }
    if (status === 403 || ['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'AllAccessDisabled', 'AccountProblem'].includes(code)) {
      return make(
        'permission',
        `cannot ${what} ${name} in ${this.location}: ${detail}`,
        'Check the access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and that the bucket policy allows s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket and s3:AbortMultipartUpload below the prefix.',
      );
    }
    if (code === 'InvalidRange' || status === 416) return make('short-read', `${name} in ${this.location} is shorter than the range asked for (${detail})`);
    if (code === 'InvalidObjectState') return make('io', `cannot ${what} ${name} in ${this.location}: it is in an archive storage class and must be restored first (${detail})`);
    const transientCodes = ['SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError', 'ServiceUnavailable', 'TimeoutError', 'RequestTimeoutException', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'NetworkingError'];
    const sysCode = (err as { code?: string }).code;
    if ((status !== undefined && (status >= 500 || status === 429)) || transientCodes.includes(code) || (sysCode !== undefined && transientCodes.includes(sysCode)) || /socket hang up|timed? ?out/i.test(e.message ?? '')) {
      return make('transient', `cannot ${what} ${name} in ${this.location}${this.where()}: ${detail}`);
    }
    return make('io', `cannot ${what} ${name} in ${this.location}${this.where()}: ${detail}`);
  }

  /** @internal */
  get etagsAreMd5(): boolean {
    return !(this.settings.sse ?? '').startsWith('aws:kms');
  }

  private writeParams(): { StorageClass?: never; ServerSideEncryption?: never; SSEKMSKeyId?: string } {
    const s = this.settings;
    // The SDK's enums are string unions; the values are validated by the server.
    return {
      ...(s.storageClass ? { StorageClass: s.storageClass as never } : {}),
      ...(s.sse ? { ServerSideEncryption: s.sse as never } : {}),
      ...(s.sseKmsKeyId ? { SSEKMSKeyId: s.sseKmsKeyId } : {}),
    };
  }

  /** @internal */
  exists(name: string): StorageError {
    return new StorageError('exists', this.location, name, `${name} already exists in ${this.location}`);
  }

  // ------------------------------------------------------------ create-only support

  /** Whether the store honours If-None-Match: * (probed once, see the header). */
  async probeConditionalCreate(): Promise<boolean> {
    if (this.conditional !== undefined) return this.conditional;
    this.probing ??= (async () => {
      const { sdk, client } = await this.connect();
      const Key = this.root + PROBE_NAME;
      for (let i = 0; i < 2; i++) {
        try {
          await client.send(new sdk.PutObjectCommand({ Bucket: this.bucket, Key, Body: Buffer.from('holdfast: probe of If-None-Match support\n'), IfNoneMatch: '*' }));
        } catch (err) {
          if (isPreconditionFailed(err)) return (this.conditional = true);
          if (status(err) === 501) return (this.conditional = false);
          throw this.wrap(err, PROBE_NAME, 'probe conditional writes with');
        }
      }
      return (this.conditional = false);
    })();
    try {
      return await this.probing;
    } finally {
      this.probing = undefined;
    }
  }

  /** After a 412 on a retried create-only request: is the object there ours (our first attempt)? */
  /** @internal */
  async landedAsOurs(name: string, size: number, etag: string, data?: readonly Uint8Array[]): Promise<boolean> {
    const { sdk, client } = await this.connect();
    const key = this.root + name;
    const head = await client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key: key }));
    if (head.ContentLength !== size) return false;
    if (this.etagsAreMd5) return unquote(head.ETag) === etag;
    if (!data) return false;
    const got = await this.get(name);
    return got.equals(concat(data, size));
  }

  // ------------------------------------------------------------ writes

  async put(name: string, data: PutData, options: PutOptions = {}): Promise<void> {
    const key = this.key(name);
    const parts = putParts(data);
    const size = putSize(data);
    try {
      const createOnly = options.createOnly === true;
      const conditional = createOnly ? await this.probeConditionalCreate() : true;
      if (createOnly && !conditional) {
        await this.fallbackCreate(name, async () => this.upload(key, name, parts, size, false));
        return;
      }
      await this.upload(key, name, parts, size, createOnly);
    } catch (err) {
      throw this.wrap(err, name, 'write');
    }
  }

  /** Store `parts` under `key` (one PUT or a multipart upload); returns the ETag. */
  /** @internal */
  async upload(key: string, name: string, parts: readonly Uint8Array[], size: number, createOnly: boolean): Promise<string> {
    if (size <= this.threshold) return this.putSingle(key, name, parts, size, createOnly);
    const partSize = Math.max(this.partSize, Math.ceil(size / MAX_PARTS));
    const mp = await this.startMultipart(key, name);
    try {
      const count = Math.ceil(size / partSize);
      await pool(count, this.partConcurrency, (i) => mp.uploadPart(i + 1, gather(parts, i * partSize, Math.min(partSize, size - i * partSize))));
      return await mp.complete(size, createOnly);
    } catch (err) {
      await mp.abort();
      throw err;
    }
  }

  private async putSingle(key: string, name: string, parts: readonly Uint8Array[], size: number, createOnly: boolean): Promise<string> {
    const { sdk, client } = await this.connect();
    const body = concat(parts, size);
    const md5 = createHash('md5').update(body).digest();
    try {
      const out = await client.send(
        new sdk.PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: size,
          ContentMD5: md5.toString('base64'),
          ...(createOnly ? { IfNoneMatch: '*' } : {}),
          ...this.writeParams(),
        }),
      );
      const etag = unquote(out.ETag);
      if (this.etagsAreMd5 && etag !== '' && etag !== md5.toString('hex')) {
        throw new StorageError('io', this.location, name, `${name} in ${this.location}: the server's ETag ${etag} is not the MD5 of the ${size} bytes sent (${md5.toString('hex')})`);
      }
      return md5.toString('hex');
    } catch (err) {
      if (createOnly && isPreconditionFailed(err)) {
        if (attempts(err) > 1 && (await this.landedAsOurs(name, size, md5.toString('hex'), [body]))) return md5.toString('hex');
        throw this.exists(name);
      }
      throw err;
    }
  }

  /**
   * Create-only on a store that ignores If-None-Match: refuse when the name exists, write, then
   * make sure the object is still ours (a concurrent writer that wrote after us wins).
   */
  /** @internal */
  async fallbackCreate(name: string, write: () => Promise<string>): Promise<void> {
    const { sdk, client } = await this.connect();
    const Key = this.root + name;
    try {
      await client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key }));
      throw this.exists(name);
    } catch (err) {
      if (err instanceof StorageError || this.wrap(err, name, 'stat').kind !== 'not-found') throw err;
    }
    const etag = await write();
    const head = await client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key }));
    if (this.etagsAreMd5 && unquote(head.ETag) !== etag) throw this.exists(name);
  }

  /** @internal */
  async startMultipart(key: string, name: string): Promise<Multipart> {
    const { sdk, client } = await this.connect();
    const out = await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ...this.writeParams() }));
    if (!out.UploadId) throw new StorageError('io', this.location, name, `${name} in ${this.location}: CreateMultipartUpload returned no upload id`);
    return new Multipart(this, sdk, client, key, name, out.UploadId);
  }

  async openWriter(): Promise<ObjectWriter> {
    return new S3Writer(this);
  }

  /** Copy the object at `srcKey` (`size` bytes, uploaded in `partSize` parts) to `name`. */
  /** @internal */
  async copyFrom(srcKey: string, size: number, partSize: number, name: string, createOnly: boolean): Promise<string> {
    const key = this.key(name);
    const copyPart = Math.min(MAX_COPY_PART, Math.max(partSize, Math.ceil(size / MAX_PARTS)));
    const mp = await this.startMultipart(key, name);
    try {
      const source = `${this.bucket}/${srcKey.split('/').map(encodeURIComponent).join('/')}`;
      await pool(Math.ceil(size / copyPart), this.partConcurrency, (i) => mp.copyPart(i + 1, source, i * copyPart, Math.min(copyPart, size - i * copyPart)));
      return await mp.complete(size, createOnly);
    } catch (err) {
      await mp.abort();
      throw err;
    }
  }

  async delete(name: string): Promise<void> {
    await this.deleteKey(this.key(name), name);
  }

  /** @internal Delete a key, hidden ones (`.tmp-*`) included; a missing key is not an error. */
  async deleteKey(key: string, name: string): Promise<void> {
    try {
      const { sdk, client } = await this.connect();
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      const e = this.wrap(err, name, 'delete');
      if (e.kind === 'not-found') return;
      throw e;
    }
  }

  // ------------------------------------------------------------ reads

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    const key = this.key(name);
    try {
      if (range && range.length === 0) {
        const { size } = await this.stat(name);
        if (range.offset > size) throw this.shortRead(name, range, size);
        return Buffer.alloc(0);
      }
      const { sdk, client } = await this.connect();
      const out = await client.send(
        new sdk.GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}) }),
      );
      let body = await readBody(out.Body, out.ContentLength);
      if (out.ContentLength !== undefined && body.length !== out.ContentLength) {
        throw new StorageError('transient', this.location, name, `${name} in ${this.location}: the connection ended after ${body.length} of ${out.ContentLength} bytes`);
      }
      if (range) {
        // A server that ignores Range answers 200 with the whole object.
        if (out.ContentRange === undefined && body.length > range.length) body = Buffer.from(body.subarray(range.offset, range.offset + range.length));
        if (body.length < range.length) throw this.shortRead(name, range, out.ContentRange);
      }
      return body;
    } catch (err) {
      throw this.wrap(err, name, 'read');
    }
  }

  private shortRead(name: string, range: ByteRange, got: number | string | undefined): StorageError {
    const detail = typeof got === 'number' ? `the object has ${got} bytes` : `the server answered ${got ?? 'fewer bytes'}`;
    return new StorageError('short-read', this.location, name, `${name} in ${this.location} is shorter than expected: wanted ${range.length} bytes at offset ${range.offset}, ${detail}`);
  }

  async stat(name: string): Promise<ObjectInfo> {
    const key = this.key(name);
    try {
      const { sdk, client } = await this.connect();
      const out = await client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { name, size: out.ContentLength ?? 0 };
    } catch (err) {
      throw this.wrap(err, name, 'stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const full = this.key(prefix, true);
    const { sdk, client } = await this.connect().catch((err: unknown) => {
      throw this.wrap(err, prefix, 'list');
    });
    let token: string | undefined;
    const seen = new Set<string>();
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      let out;
      try {
        out = await client.send(new sdk.ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ...(token ? { ContinuationToken: token } : {}) }));
      } catch (err) {
        throw this.wrap(err, prefix, 'list');
      }
      for (const o of out.Contents ?? []) {
        if (!o.Key?.startsWith(this.root)) continue;
        const rel = o.Key.slice(this.root.length);
        if (!validName(this.location, rel)) continue; // temporaries, directory markers, foreign keys
        yield { name: rel, size: o.Size ?? 0 };
      }
      if (!out.IsTruncated) return;
      token = out.NextContinuationToken;
      if (!token || seen.has(token)) throw new StorageError('io', this.location, prefix, `listing ${prefix || '(everything)'} in ${this.location}: the server returned a truncated page without a new continuation token`);
      seen.add(token);
    }
    throw new StorageError('io', this.location, prefix, `listing ${prefix || '(everything)'} in ${this.location}: more than ${MAX_LIST_PAGES} pages`);
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = this.connecting;
    this.connecting = undefined;
    if (c) {
      try {
        (await c).client.destroy();
      } catch {
        // never connected
      }
    }
  }
}

/** One multipart upload: parts (uploaded or copied), then complete or abort. */
class Multipart {
  private readonly parts: UploadedPart[] = [];
  private aborted = false;

  constructor(
    private readonly backend: S3Backend,
    private readonly sdk: Sdk,
    private readonly client: S3Client,
    readonly key: string,
    private readonly name: string,
    private readonly uploadId: string,
  ) {}

  async uploadPart(PartNumber: number, body: Buffer): Promise<void> {
    const md5 = createHash('md5').update(body).digest();
    const out = await this.client.send(
      new this.sdk.UploadPartCommand({ Bucket: this.backend.bucket, Key: this.key, UploadId: this.uploadId, PartNumber, Body: body, ContentLength: body.length, ContentMD5: md5.toString('base64') }),
    );
    const etag = unquote(out.ETag);
    if (this.backend.etagsAreMd5 && etag !== md5.toString('hex')) {
      throw new StorageError('io', this.backend.location, this.name, `${this.name} in ${this.backend.location}: part ${PartNumber}'s ETag ${etag} is not the MD5 of the ${body.length} bytes sent`);
    }
    this.parts.push({ PartNumber, ETag: out.ETag ?? '', md5 });
  }

  /** Copy `length` bytes at `offset` of `source` ("bucket/key") as part `PartNumber`. */
  async copyPart(PartNumber: number, source: string, offset: number, length: number): Promise<void> {
    const out = await this.client.send(
      new this.sdk.UploadPartCopyCommand({
        Bucket: this.backend.bucket,
        Key: this.key,
        UploadId: this.uploadId,
        PartNumber,
        CopySource: source,
        CopySourceRange: `bytes=${offset}-${offset + length - 1}`,
      }),
    );
    const etag = out.CopyPartResult?.ETag ?? '';
    this.parts.push({ PartNumber, ETag: etag, md5: Buffer.from(unquote(etag), 'hex') });
  }

  /** Complete the upload (conditional when createOnly) and check its ETag and size; returns the ETag. */
  async complete(size: number, createOnly: boolean): Promise<string> {
    const parts = [...this.parts].sort((a, b) => a.PartNumber - b.PartNumber);
    const expected = `${createHash('md5')
      .update(Buffer.concat(parts.map((p) => p.md5)))
      .digest('hex')}-${parts.length}`;
    const { etagsAreMd5 } = this.backend;
    try {
      const out = await this.client.send(
        new this.sdk.CompleteMultipartUploadCommand({
          Bucket: this.backend.bucket,
          Key: this.key,
          UploadId: this.uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) },
          ...(createOnly ? { IfNoneMatch: '*' } : {}),
        }),
      );
      const etag = unquote(out.ETag);
      if (etagsAreMd5 && etag !== expected) {
        throw new StorageError('io', this.backend.location, this.name, `${this.name} in ${this.backend.location}: the completed upload's ETag ${etag} is not the expected ${expected}`);
      }
    } catch (err) {
      if (createOnly && isPreconditionFailed(err)) {
        if (attempts(err) > 1 && (await this.backend.landedAsOurs(this.name, size, expected))) return expected;
        throw this.backend.exists(this.name);
      }
      throw err;
    }
    const head = await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.backend.bucket, Key: this.key }));
    if (head.ContentLength !== size) {
      throw new StorageError('io', this.backend.location, this.name, `${this.name} in ${this.backend.location}: the completed upload has ${String(head.ContentLength)} bytes, ${size} were sent`);
    }
    return expected;
  }

  async abort(): Promise<void> {
    if (this.aborted) return;
    this.aborted = true;
    try {
      await this.client.send(new this.sdk.AbortMultipartUploadCommand({ Bucket: this.backend.bucket, Key: this.key, UploadId: this.uploadId }));
    } catch {
      // Best effort: a lifecycle rule removes what is left (see the header).
    }
  }
}

/**
 * Streaming writer: memory up to the multipart threshold, then a multipart upload of a temporary
 * key, copied server-side to the final name on commit (see the header).
 */
class S3Writer implements ObjectWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private total = 0;
  private upload: Multipart | undefined;
  private partNumber = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private done = false;
  private readonly tmpName = `${WRITER_PREFIX}${randomBytes(8).toString('hex')}`;

  constructor(private readonly backend: S3Backend) {}

  async write(parts: readonly Uint8Array[]): Promise<void> {
    if (this.done) throw new StorageError('invalid', this.backend.location, '(new object)', 'write after commit or abort');
    this.throwIfFailed();
    for (const p of parts) {
      if (p.byteLength === 0) continue;
      this.pending.push(Buffer.from(Uint8Array.prototype.slice.call(p))); // a copy: the caller may reuse its buffer
      this.pendingBytes += p.byteLength;
      this.total += p.byteLength;
    }
    const { threshold, partSize } = this.backend;
    try {
      if (!this.upload && this.total > threshold) this.upload = await this.backend.startMultipart(this.backend.root + this.tmpName, '(new object)');
      while (this.upload && this.pendingBytes >= partSize) await this.sendPart(this.take(partSize));
    } catch (err) {
      throw this.backend.wrap(err, '(new object)', 'write');
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.backend.wrap(this.failure, '(new object)', 'write');
  }

  /** The first `n` pending bytes as one buffer. */
  private take(n: number): Buffer {
    const out = gather(this.pending, 0, n);
    let left = n;
    while (left > 0) {
      const head = this.pending[0]!;
      if (head.length <= left) {
        this.pending.shift();
        left -= head.length;
      } else {
        this.pending[0] = head.subarray(left);
        left = 0;
      }
    }
    this.pendingBytes -= n;
    return out;
  }

  /** Start uploading one part; waits while partConcurrency parts are in flight. */
  private async sendPart(body: Buffer): Promise<void> {
    while (this.inFlight.size >= this.backend.partConcurrency) await Promise.race(this.inFlight);
    this.throwIfFailed();
    const upload = this.upload!;
    const p = upload.uploadPart(++this.partNumber, body).catch((err: unknown) => {
      this.failure ??= err;
    });
    const tracked = p.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  async commit(name: string, options: PutOptions = {}): Promise<void> {
    const createOnly = options.createOnly === true;
    try {
      const key = this.backend.key(name);
      if (this.done) throw new StorageError('invalid', this.backend.location, name, 'commit after commit or abort');
      this.throwIfFailed();
      const conditional = createOnly ? await this.backend.probeConditionalCreate() : true;
      if (!this.upload) {
        const parts = this.pending;
        const write = (useCondition: boolean): Promise<string> => this.backend.upload(key, name, parts, this.pendingBytes, useCondition);
        if (createOnly && !conditional) await this.backend.fallbackCreate(name, () => write(false));
        else await write(createOnly);
      } else {
        if (this.pendingBytes > 0) await this.sendPart(this.take(this.pendingBytes));
        await Promise.all(this.inFlight);
        this.throwIfFailed();
        const tmpKey = this.upload.key;
        await this.upload.complete(this.total, false);
        try {
          const copy = (useCondition: boolean): Promise<string> => this.backend.copyFrom(tmpKey, this.total, this.backend.partSize, name, useCondition);
          if (createOnly && !conditional) await this.backend.fallbackCreate(name, () => copy(false));
          else await copy(createOnly);
        } finally {
          await this.backend.deleteKey(this.backend.root + this.tmpName, this.tmpName).catch(() => undefined);
        }
      }
      this.done = true;
      this.pending = [];
    } catch (err) {
      await this.abort();
      throw this.backend.wrap(err, name, 'write');
    }
  }

  async abort(): Promise<void> {
    this.done = true;
    this.pending = [];
    if (this.upload) {
      await Promise.allSettled(this.inFlight);
      await this.upload.abort();
      await this.backend.deleteKey(this.backend.root + this.tmpName, this.tmpName).catch(() => undefined);
    }
  }
}

// ---------------------------------------------------------------- helpers

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isPreconditionFailed(err: unknown): boolean {
  return status(err) === 412 || (err as { name?: string } | undefined)?.name === 'PreconditionFailed';
}

/** How many attempts the SDK made for the request that failed with `err`. */
function attempts(err: unknown): number {
  return (err as { $metadata?: { attempts?: number } } | undefined)?.$metadata?.attempts ?? 1;
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"|"$/g, '');
}

function validName(location: string, name: string): boolean {
  try {
    checkName(location, name);
    return true;
  } catch {
    return false;
  }
}

/** `parts` as one Buffer of `size` bytes (no copy for a single part). */
function concat(parts: readonly Uint8Array[], size: number): Buffer {
  const nonEmpty = parts.filter((p) => p.byteLength > 0);
  if (nonEmpty.length === 1) {
    const p = nonEmpty[0]!;
    return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  }
  return Buffer.concat(nonEmpty, size);
}

/** `length` bytes starting at `offset` of the concatenation of `parts`, as one Buffer. */
function gather(parts: readonly Uint8Array[], offset: number, length: number): Buffer {
  const pieces: Uint8Array[] = [];
  let pos = 0;
  for (const p of parts) {
    const end = pos + p.byteLength;
    if (end > offset && pos < offset + length) {
      const from = Math.max(0, offset - pos);
      const to = Math.min(p.byteLength, offset + length - pos);
      pieces.push(p.subarray(from, to));
    }
    pos = end;
    if (pos >= offset + length) break;
  }
  return concat(pieces, length);
}

/** Run `fn(0…count-1)` with at most `limit` running at once; the first failure rejects (after the running ones end). */
async function pool(count: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < count) {
      const i = next++;
      try {
        await fn(i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failure) throw failure.err;
}

/** The whole body of a GetObject response (a Node stream) as one Buffer. */
async function readBody(body: unknown, length: number | undefined): Promise<Buffer> {
  if (body === undefined || body === null) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let got = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array>) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    chunks.push(b);
    got += b.length;
  }
  if (length !== undefined && chunks.length === 1 && got === length) return chunks[0]!;
  return Buffer.concat(chunks, got);
}
