/**
 * Fault injection for tests: a wrapper that makes chosen operations fail, slow down, hang, or
 * leave a partial object, by operation, name prefix and probability, from a seeded generator so a
 * failing run repeats exactly. Rules can be changed while the backend is in use.
 *
 * Kinds of fault:
 * - `error`: the operation fails with a StorageError of the rule's kind (default `transient`),
 *   before reaching the inner backend (`when: 'before'`, default) or after it succeeded (`when:
 *   'after'`: the change was made but the caller is told it failed, like a lost acknowledgement).
 * - `latency`: the operation is delayed by `latencyMs`, then runs.
 * - `hang`: the operation never settles (until `release()` is called): a dead connection.
 * - `partial`: a put first stores a prefix of the data under the name (`partialBytes`, default
 *   half) and then fails with `transient`: a store that does not write atomically.
 */
import type { Backend, ByteRange, Capabilities, DeleteOptions, ObjectInfo, ObjectWriter, PutData, PutOptions, StorageErrorKind } from './backend.js';
import { StorageError, listWhole, putParts } from './backend.js';

export type FaultOp = 'put' | 'get' | 'stat' | 'list' | 'delete' | 'commit';

export interface FaultRule {
  readonly ops: readonly FaultOp[];
  readonly fault: 'error' | 'latency' | 'hang' | 'partial';
  /** Only names starting with this (default: all). */
  readonly prefix?: string | undefined;
  /** Chance per matching call (default 1). */
  readonly probability?: number | undefined;
  /** At most this many times (default: unlimited). */
  readonly count?: number | undefined;
  readonly kind?: StorageErrorKind | undefined;
  readonly when?: 'before' | 'after' | undefined;
  readonly latencyMs?: number | undefined;
  readonly partialBytes?: number | undefined;
}

/** xorshift32 in [0, 1): seeded, so a run's faults repeat. */
function seeded(seed: number): () => number {
  let x = seed | 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

export class FaultBackend implements Backend {
  readonly location: string;
  readonly capabilities: Capabilities;
  private rules: Array<{ rule: FaultRule; left: number }> = [];
  private readonly random: () => number;
  private hung: Array<() => void> = [];
  /** How many faults fired, by operation. */
  readonly fired = new Map<FaultOp, number>();
  /** How many calls reached the inner backend, by operation. */
  readonly calls = new Map<FaultOp, number>();

  constructor(
    private readonly inner: Backend,
    seed = 1,
  ) {
    this.location = inner.location;
    this.capabilities = inner.capabilities;
    this.random = seeded(seed);
  }

  setRules(rules: readonly FaultRule[]): void {
    this.rules = rules.map((rule) => ({ rule, left: rule.count ?? Infinity }));
  }

  clear(): void {
    this.rules = [];
  }

  /** Let every hung operation go on to the inner backend. */
  release(): void {
    const h = this.hung;
    this.hung = [];
    for (const go of h) go();
  }

  private pick(op: FaultOp, name: string): FaultRule | undefined {
    for (const r of this.rules) {
      if (r.left <= 0 || !r.rule.ops.includes(op) || (r.rule.prefix !== undefined && !name.startsWith(r.rule.prefix))) continue;
      if (this.random() >= (r.rule.probability ?? 1)) continue;
      r.left--;
      this.fired.set(op, (this.fired.get(op) ?? 0) + 1);
      return r.rule;
    }
    return undefined;
  }

  private error(rule: FaultRule, op: FaultOp, name: string): StorageError {
    return new StorageError(rule.kind ?? 'transient', this.location, name, `injected ${rule.kind ?? 'transient'} fault on ${op} ${name}`);
  }

  /** Apply the fault (if any) around `call`; `partial` is handled by put itself. */
  private async apply<T>(op: FaultOp, name: string, call: () => Promise<T>, rule = this.pick(op, name)): Promise<T> {
    const go = async (): Promise<T> => {
      this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
      return call();
    };
    if (!rule) return go();
    switch (rule.fault) {
      case 'latency':
        await new Promise((r) => setTimeout(r, rule.latencyMs ?? 100));
        return go();
      case 'hang':
        await new Promise<void>((r) => this.hung.push(r));
        return go();
      case 'error':
      case 'partial':
        if (rule.when === 'after') {
          await go();
          throw this.error(rule, op, name);
        }
        throw this.error(rule, op, name);
    }
  }

  async put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    const rule = this.pick('put', name);
    if (rule?.fault === 'partial') {
      const whole = Buffer.concat(putParts(data));
      await this.inner.put(name, whole.subarray(0, rule.partialBytes ?? whole.length >> 1), options);
      throw this.error(rule, 'put', name);
    }
    return this.apply('put', name, () => this.inner.put(name, data, options), rule);
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.apply('get', name, () => this.inner.get(name, range));
  }

  stat(name: string): Promise<ObjectInfo> {
    return this.apply('stat', name, () => this.inner.stat(name));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* await this.apply('list', prefix, () => listWhole(this.inner, prefix));
  }

  delete(name: string, options?: DeleteOptions): Promise<void> {
    return this.apply('delete', name, () => this.inner.delete(name, options));
  }

  async openWriter(): Promise<ObjectWriter> {
    const w = await this.inner.openWriter();
    return {
      write: (parts) => w.write(parts),
      commit: (name, options) => this.apply('commit', name, () => w.commit(name, options)),
      abort: () => w.abort(),
    };
  }

  close(): Promise<void> {
    this.release();
    return this.inner.close();
  }
}
