/**
 * The one retry wrapper for every remote driver: exponential backoff with full jitter on
 * retryable failures, immediate failure on permanent ones, a timeout per request and a deadline
 * per operation (docs/design.md §19).
 *
 * - Retryable: `transient` errors (throttling such as S3 503 SlowDown, connection resets, the
 *   driver's own timeouts) and a request that outlives `requestTimeoutMs`. Permanent
 *   (`not-found`, `exists`, `short-read`, `invalid`, `permission`) and `io` errors (a local disk
 *   error: not retried automatically, per the contract) are thrown at once.
 * - Backoff before attempt n+1: a random delay in [0, min(maxDelay, baseDelay * 2^n)].
 * - Deadline: no attempt starts, and no wait is begun, past `deadlineMs` from the operation's
 *   start; the last error is thrown, as a `transient` error that says how long and how often it
 *   was tried. So a dead endpoint fails an operation within about `deadlineMs` plus one request
 *   timeout, never after many minutes.
 * - A request that timed out cannot be cancelled through the Backend interface; its late result
 *   is ignored. That is safe because every operation is idempotent (puts are atomic and
 *   repeatable, deletes tolerate a missing object) with one exception handled here: a createOnly
 *   put whose earlier attempt may have succeeded sees `exists` on a retry; the object is then read
 *   back, and identical bytes mean the earlier attempt succeeded (success), anything else is
 *   `exists`. Hence the one deviation from the contract: after a retried attempt, a createOnly
 *   put of bytes identical to an existing object succeeds (no caller can tell the difference:
 *   the object holds exactly what it asked to store; holdfast's create-only objects either have
 *   unique content or treat identical content as success, like archive-push).
 * - `list` gathers every entry within one attempt before yielding, so a retry never yields twice.
 * - Writers: up to 64 MiB the parts are kept (copied) and `commit` is a retried `put`, so a failed
 *   upload is repeated whole; beyond that the object is streamed to the driver's own writer.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Backend, type ByteRange, type Capabilities, type DeleteOptions, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, StorageError, listWhole, putParts } from './backend.js';

export interface RetrySettings {
  /** One request may take this long before it counts as failed (transient). */
  readonly requestTimeoutMs: number;
  /** No new attempt after this long since the operation started. */
  readonly deadlineMs: number;
  /** At most this many attempts per operation. */
  readonly maxAttempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

/** Writers keep at most this much for a retried put; larger objects are streamed (see openWriter). */
export const WRITER_BUFFER = 64 << 20;

export const DEFAULT_RETRY: RetrySettings = { requestTimeoutMs: 60_000, deadlineMs: 120_000, maxAttempts: 10, baseDelayMs: 200, maxDelayMs: 10_000 };

export interface RetryEvents {
  /** Called before each wait: what failed, which attempt, how long it waits. */
  onRetry?(op: string, name: string, attempt: number, delayMs: number, err: unknown): void;
}

/** Only `transient` errors: `io` errors are not retried automatically (backend.ts contract). */
function retryable(err: unknown): boolean {
  return err instanceof StorageError && err.kind === 'transient';
}

export class RetryBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities;

  constructor(
    private readonly inner: Backend,
    private readonly settings: RetrySettings = DEFAULT_RETRY,
    private readonly events: RetryEvents = {},
    private readonly random: () => number = Math.random,
  ) {
    this.location = inner.location;
    this.capabilities = inner.capabilities;
  }

  /** Run `fn` with retries; `fn` gets the attempt number (1-based). */
  private async run<T>(op: string, name: string, fn: (attempt: number) => Promise<T>): Promise<T> {
    const s = this.settings;
    const start = Date.now();
    let lastErr: unknown;
    for (let attempt = 1; attempt <= s.maxAttempts; attempt++) {
      try {
        return await this.withTimeout(op, name, fn(attempt));
      } catch (err) {
        if (!retryable(err)) throw err;
        lastErr = err;
      }
      const delay = Math.floor(this.random() * Math.min(s.maxDelayMs, s.baseDelayMs * 2 ** (attempt - 1)));
      if (attempt === s.maxAttempts || Date.now() + delay - start >= s.deadlineMs) break;
      this.events.onRetry?.(op, name, attempt, delay, lastErr);
      await sleep(delay);
    }
    const elapsed = Date.now() - start;
    const why = lastErr instanceof Error ? lastErr.message : String(lastErr);
    throw new StorageError('transient', this.location, name, `${op} ${name || '(listing)'} on ${this.location} failed for ${Math.round(elapsed / 100) / 10} s despite retries (deadline ${Math.round(s.deadlineMs / 1000)} s): ${why}`, {
      cause: lastErr,
      hint: 'The storage did not answer or kept failing (endpoint down, network, throttling). Nothing partial was stored. Check the endpoint and the network, then run the command again; --storage-deadline and --storage-timeout set how long holdfast keeps trying.',
    });
  }

  private async withTimeout<T>(op: string, name: string, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StorageError('transient', this.location, name, `${op} ${name} on ${this.location}: no answer within ${Math.round(this.settings.requestTimeoutMs / 100) / 10} s`)), this.settings.requestTimeoutMs);
    });
    p.catch(() => undefined); // a late failure of an abandoned request is not unhandled
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    return this.run('put', name, async (attempt) => {
      try {
        await this.inner.put(name, data, options);
      } catch (err) {
        // An earlier attempt failed retryably (a permanent error would have ended the loop), so
        // it may have stored the object before its answer was lost.
        if (options?.createOnly && attempt > 1 && err instanceof StorageError && err.kind === 'exists' && (await this.sameBytes(name, data))) return;
        throw err;
      }
    });
  }

  /** Whether `name` holds exactly `data` (after an uncertain createOnly attempt). */
  private async sameBytes(name: string, data: PutData): Promise<boolean> {
    let stored: Buffer;
    try {
      stored = await this.get(name);
    } catch (err) {
      if (err instanceof StorageError && err.kind === 'not-found') return false;
      throw err;
    }
    const want = Buffer.concat(putParts(data).map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
    return stored.equals(want);
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.run('get', name, () => this.inner.get(name, range));
  }

  stat(name: string): Promise<ObjectInfo> {
    return this.run('stat', name, () => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* await this.run('list', prefix, () => listWhole(this.inner, prefix));
  }

  delete(name: string, options?: DeleteOptions): Promise<void> {
    return this.run('delete', name, () => this.inner.delete(name, options));
  }

  /**
   * Objects up to WRITER_BUFFER bytes (every pack at the default pack size) are kept and
   * committed with a retried put. A larger one is streamed to the inner driver's writer from
   * then on (its memory stays bounded whatever --pack-size says); its requests are then only
   * bounded by the request timeout, not repeated here.
   */
  async openWriter(): Promise<ObjectWriter> {
    let parts: Uint8Array[] = [];
    let buffered = 0;
    let streaming: ObjectWriter | undefined;
    return {
      write: async (more) => {
        if (streaming) return this.withTimeout('write', '(writer)', streaming.write(more));
        // Copy: the caller may reuse its buffers once write() resolved.
        for (const p of more) {
          parts.push(Uint8Array.prototype.slice.call(p));
          buffered += p.byteLength;
        }
        if (buffered > WRITER_BUFFER) {
          streaming = await this.inner.openWriter();
          const held = parts;
          parts = [];
          await this.withTimeout('write', '(writer)', streaming.write(held));
        }
      },
      commit: async (name, options) => {
        try {
          if (streaming) await this.withTimeout('commit', name, streaming.commit(name, options));
          else await this.put(name, parts, options);
        } finally {
          parts = [];
        }
      },
      abort: async () => {
        parts = [];
        await streaming?.abort();
      },
    };
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
