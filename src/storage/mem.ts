/**
 * In-memory driver: a real Backend for unit tests and for measuring the layers above storage.
 * Objects are copied in and out so callers cannot alias stored bytes.
 */
import { type Backend, BufferedWriter, type ByteRange, type Capabilities, type ObjectInfo, type ObjectWriter, type PutData, type PutOptions, StorageError, checkName, putParts, type DeleteOptions } from './backend.js';

export class MemoryBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities = { conditionalCreate: true, maxConcurrency: 64, persistent: false };
  private readonly objects = new Map<string, Buffer>();

  constructor(location = 'mem:') {
    this.location = location;
  }

  async put(name: string, data: PutData, options: PutOptions = {}): Promise<void> {
    checkName(this.location, name);
    if (options.createOnly && this.objects.has(name)) throw new StorageError('exists', this.location, name, `${name} already exists in ${this.location}`);
    this.objects.set(name, Buffer.concat(putParts(data)));
  }

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    checkName(this.location, name);
    const obj = this.objects.get(name);
    if (!obj) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location}`);
    if (!range) return Buffer.from(obj);
    if (range.offset + range.length > obj.length) {
      throw new StorageError('short-read', this.location, name, `${name} in ${this.location} is shorter than expected: wanted ${range.length} bytes at offset ${range.offset}, size ${obj.length}`);
    }
    return Buffer.from(obj.subarray(range.offset, range.offset + range.length));
  }

  async stat(name: string): Promise<ObjectInfo> {
    checkName(this.location, name);
    const obj = this.objects.get(name);
    if (!obj) throw new StorageError('not-found', this.location, name, `${name} not found in ${this.location}`);
    return { name, size: obj.length };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkName(this.location, prefix, true);
    for (const [name, data] of [...this.objects]) {
      if (name.startsWith(prefix)) yield { name, size: data.length };
    }
  }

  async delete(name: string, _options?: DeleteOptions): Promise<void> {
    checkName(this.location, name);
    this.objects.delete(name);
  }

  async openWriter(): Promise<ObjectWriter> {
    return new BufferedWriter(this);
  }

  async close(): Promise<void> {
    // Nothing to release.
  }

  /** Direct access for tests that damage objects on purpose. */
  raw(name: string): Buffer | undefined {
    return this.objects.get(name);
  }
}
