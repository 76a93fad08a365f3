/**
 * Concurrency-limiting wrapper: at most `limit` requests in flight against the inner backend.
 * Listing holds a slot only while it fetches, not while the caller consumes entries.
 */
import { type Backend, type ByteRange, type Capabilities, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, type DeleteOptions, listWhole } from './backend.js';
import { Semaphore } from '../util/semaphore.js';

export class LimitBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities;
  private readonly sem: Semaphore;

  constructor(private readonly inner: Backend, limit = inner.capabilities.maxConcurrency) {
    this.location = inner.location;
    this.capabilities = inner.capabilities;
    this.sem = new Semaphore(limit);
  }

  put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    return this.sem.run(() => this.inner.put(name, data, options));
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.sem.run(() => this.inner.get(name, range));
  }

  stat(name: string): Promise<ObjectInfo> {
    return this.sem.run(() => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* await this.sem.run(() => listWhole(this.inner, prefix));
  }

  delete(name: string, options?: DeleteOptions): Promise<void> {
    return this.sem.run(() => this.inner.delete(name, options));
  }

  async openWriter(): Promise<ObjectWriter> {
    const w = await this.inner.openWriter();
    return {
      write: (parts) => w.write(parts),
      commit: (name, options) => this.sem.run(() => w.commit(name, options)),
      abort: () => w.abort(),
    };
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
