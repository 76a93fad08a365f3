/**
 * A pool of backup worker threads (chunk-worker.ts) that read, chunk, hash, compress and seal
 * files in parallel, while the main thread keeps the single source of truth: which blobs exist
 * (claims in the repository), the packs and the trees.
 *
 * Protocol, per file job:
 *   main → worker   file {job, path, size}
 *   worker → main   ids {job, ids, lengths}         a batch of chunk ids (one window at most)
 *   main → worker   need {job, need[]}              true for ids this job claimed (new blobs)
 *   worker → main   sealed {job, blobs}             the claimed blobs, sealed (transferred)
 *   main → worker   ack {job, abort?}               once they are queued in packs
 *   …repeat…
 *   worker → main   done {job, content, size} | fail {job, code, message}
 *
 * Files under 1 MiB take a shortcut: the worker seals every chunk without asking and sends
 *   worker → main   whole {job, content, size, blobs}
 * and the main thread stores the blobs it can claim and drops the rest.
 *
 * Files cut into fixed chunks (PostgreSQL relation files) of 32 MiB or more are read as 16 MiB
 * ranges, each its own job on whichever worker is free (file {…, range}), and their results joined
 * in order: one 1 GiB relation segment would otherwise keep one worker busy while the others idle.
 * Range bounds are multiples of the chunk size, so the chunks are those of one sequential read.
 *
 * Each worker runs at most `perWorker` jobs and at most one file of 128 KiB or more at a time, so
 * memory stays bounded: one reusable window per worker plus small files' own buffers.
 */
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Repository } from '../repository/repository.js';
import type { Compression } from '../repository/compress.js';
import type { ChunkerSpec } from './chunker.js';
import type { CorruptPage, FileMode } from './file-mode.js';

/** Part of a file: from `offset`, `length` bytes at most, or to the end of the file without it. */
export interface FileRange {
  readonly offset: number;
  readonly length?: number | undefined;
}

export type MainToWorker =
  | { t: 'init'; key: Uint8Array; chunker: ChunkerSpec; compression: Compression }
  | { t: 'file'; job: number; path: string; size: number; mode?: FileMode | undefined; range?: FileRange | undefined }
  | { t: 'need'; job: number; need: boolean[] }
  | { t: 'ack'; job: number; abort?: boolean };

export type WorkerToMain =
  | { t: 'ids'; job: number; ids: string[]; lengths: number[] }
  | { t: 'sealed'; job: number; blobs: Array<{ id: string; data: Uint8Array; rawLength: number }> }
  | { t: 'done'; job: number; content: string[]; size: number; corrupt?: CorruptPage[] }
  | { t: 'whole'; job: number; content: string[]; size: number; blobs: Array<{ id: string; data: Uint8Array; rawLength: number }>; corrupt?: CorruptPage[] }
  | { t: 'fail'; job: number; code: string; message: string };

export interface ReadResult {
  content: string[];
  size: number;
  /** Pages that failed verification (FileMode.verify). */
  corrupt?: CorruptPage[] | undefined;
}

export interface ReadProgress {
  /** Bytes chunked so far (new or not). */
  onBytes(n: number): void;
  /** A new blob of `rawLength` bytes was stored. */
  onBlobAdded(rawLength: number): void;
}

interface Job {
  /** Blobs this job claimed and has not delivered yet. */
  claimed: number;
  resolve(r: ReadResult): void;
  reject(err: Error): void;
  progress: ReadProgress;
  big: boolean;
  worker: Slot;
}

interface Slot {
  worker: Worker;
  jobs: number;
  big: number;
}

/** Range size for files split across workers (rounded down to a multiple of their chunk size). */
const RANGE = 16 << 20;

/** Where the worker script is: beside this module (tsc build) or the bundle's entry (dist/). */
function workerScript(): URL | undefined {
  for (const rel of ['./chunk-worker.js', '../chunk-worker.mjs', './chunk-worker.mjs']) {
    const url = new URL(rel, import.meta.url);
    if (existsSync(fileURLToPath(url))) return url;
  }
  return undefined;
}

export class ReaderPool {
  private readonly slots: Slot[] = [];
  private readonly jobs = new Map<number, Job>();
  private readonly waiters: Array<() => void> = [];
  private nextJob = 1;
  private failure: Error | undefined;

  private constructor(
    private readonly repo: Repository,
    private readonly perWorker: number,
  ) {}

  /** Start `count` workers; undefined when worker threads cannot be used here. */
  static start(repo: Repository, count: number, perWorker = 8): ReaderPool | undefined {
    const script = workerScript();
    if (!script || count < 1) return undefined;
    const pool = new ReaderPool(repo, perWorker);
    const { key, compression } = repo.sealingParams();
    for (let i = 0; i < count; i++) {
      // A small young generation: workers allocate mostly short-lived buffers, and V8's default
      // (tens of MB per isolate) kept that much garbage alive per worker between scavenges.
      const worker = new Worker(script, { resourceLimits: { maxYoungGenerationSizeMb: 8 } });
      const slot: Slot = { worker, jobs: 0, big: 0 };
      worker.on('message', (msg: WorkerToMain) => void pool.onMessage(slot, msg));
      worker.on('error', (err) => pool.fatal(new Error(`backup worker failed: ${err.message}`)));
      worker.on('exit', (code) => {
        if (code !== 0) pool.fatal(new Error(`backup worker exited with code ${code}`));
      });
      worker.postMessage({ t: 'init', key: Uint8Array.from(key), chunker: repo.config.chunker, compression } satisfies MainToWorker);
      pool.slots.push(slot);
    }
    return pool;
  }

  /** Read, chunk and store one file; resolves with its content ids. */
  async read(path: string, size: number, progress: ReadProgress, mode?: FileMode): Promise<ReadResult> {
    const step = mode?.fixedChunk ? Math.max(1, Math.floor(RANGE / mode.fixedChunk)) * mode.fixedChunk : 0;
    if (step === 0 || this.slots.length < 2 || size < 2 * step) return this.readJob(path, size, progress, mode);
    // Every range but the last ends at its bound; the last reads to the end of the file, which may
    // have grown since it was measured (as one sequential read would).
    const ranges: FileRange[] = [];
    const count = Math.floor(size / step);
    for (let i = 0; i < count; i++) ranges.push(i < count - 1 ? { offset: i * step, length: step } : { offset: i * step });
    const settled = await Promise.allSettled(ranges.map((r) => this.readJob(path, r.length ?? size - r.offset, progress, mode, r)));
    const content: string[] = [];
    const corrupt: CorruptPage[] = [];
    let total = 0;
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    for (const [i, s] of settled.entries()) {
      const r = (s as PromiseFulfilledResult<ReadResult>).value;
      content.push(...r.content);
      if (r.corrupt) corrupt.push(...r.corrupt);
      total += r.size;
      // A range that ended early is where the file ended (it shrank while it was read): what later
      // ranges found is not the continuation of these bytes, so the file is taken as ending here.
      const length = ranges[i]!.length;
      if (length !== undefined && r.size < length) break;
    }
    return { content, size: total, ...(corrupt.length ? { corrupt } : {}) };
  }

  private async readJob(path: string, size: number, progress: ReadProgress, mode?: FileMode, range?: FileRange): Promise<ReadResult> {
    const big = size >= 128 << 10;
    let slot: Slot | undefined;
    for (;;) {
      if (this.failure) throw this.failure;
      slot = this.slots.filter((s) => s.jobs < this.perWorker && (!big || s.big === 0)).sort((a, b) => a.jobs - b.jobs)[0];
      if (slot) break;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    const job = this.nextJob++;
    slot.jobs++;
    if (big) slot.big++;
    const s = slot;
    return new Promise<ReadResult>((resolve, reject) => {
      this.jobs.set(job, { claimed: 0, resolve, reject, progress, big, worker: s });
      s.worker.postMessage({ t: 'file', job, path, size, mode, ...(range ? { range } : {}) } satisfies MainToWorker);
    });
  }

  private finish(job: number): Job | undefined {
    const j = this.jobs.get(job);
    if (!j) return undefined;
    this.jobs.delete(job);
    j.worker.jobs--;
    if (j.big) j.worker.big--;
    const waiters = this.waiters.splice(0);
    for (const w of waiters) w();
    return j;
  }

  private async onMessage(slot: Slot, msg: WorkerToMain): Promise<void> {
    const job = this.jobs.get(msg.job);
    switch (msg.t) {
      case 'ids': {
        const need = msg.ids.map((hex) => this.failure === undefined && job !== undefined && this.repo.claimBlob('data', hex));
        if (job) job.claimed += need.filter(Boolean).length;
        for (const n of msg.lengths) job?.progress.onBytes(n);
        slot.worker.postMessage({ t: 'need', job: msg.job, need } satisfies MainToWorker);
        return;
      }
      case 'sealed': {
        let abort = this.failure !== undefined;
        for (const b of msg.blobs) {
          const id = Buffer.from(b.id, 'hex');
          if (job) job.claimed--;
          if (abort) {
            this.repo.releaseBlob('data', b.id);
            continue;
          }
          try {
            const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
            await this.repo.addSealedBlob('data', id, { parts: [data], length: data.length }, b.rawLength);
            job?.progress.onBlobAdded(b.rawLength);
          } catch (err) {
            abort = true;
            this.finish(msg.job)?.reject(err instanceof Error ? err : new Error(String(err)));
          }
        }
        slot.worker.postMessage({ t: 'ack', job: msg.job, ...(abort ? { abort: true } : {}) } satisfies MainToWorker);
        return;
      }
      case 'done':
        this.finish(msg.job)?.resolve({ content: msg.content, size: msg.size, corrupt: msg.corrupt });
        return;
      case 'whole': {
        try {
          job?.progress.onBytes(msg.size);
          for (const b of msg.blobs) {
            if (this.failure !== undefined || !this.repo.claimBlob('data', b.id)) continue;
            const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
            await this.repo.addSealedBlob('data', Buffer.from(b.id, 'hex'), { parts: [data], length: data.length }, b.rawLength);
            job?.progress.onBlobAdded(b.rawLength);
          }
          if (this.failure) throw this.failure;
          this.finish(msg.job)?.resolve({ content: msg.content, size: msg.size, corrupt: msg.corrupt });
        } catch (err) {
          this.finish(msg.job)?.reject(err instanceof Error ? err : new Error(String(err)));
        }
        return;
      }
      case 'fail': {
        const err = new Error(msg.message) as Error & { code?: string };
        if (msg.code) err.code = msg.code;
        if (job && job.claimed > 0) {
          // Other files may already rely on blobs this job claimed but never delivered: no
          // snapshot may be written now, so the whole backup fails.
          this.fatal(new Error(`backup worker lost ${job.claimed} claimed blob(s) of ${msg.message}`));
          return;
        }
        this.finish(msg.job)?.reject(err);
        return;
      }
    }
  }

  private fatal(err: Error): void {
    this.failure ??= err;
    for (const job of [...this.jobs.keys()]) this.finish(job)?.reject(err);
  }

  async close(): Promise<void> {
    this.failure ??= new Error('reader pool closed');
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
