/**
 * Crash injection for the crash tests (docs/design.md §18): a wrapper that counts the mutations
 * the process makes to the repository (put, delete, and the commit of a streamed object) and
 * kills the process with SIGKILL right after the N-th one returned, i.e. at an exact, repeatable
 * point between two durable steps. Lock objects (`locks/`) are not counted: heartbeats make their
 * number depend on timing.
 *
 * Enabled only through the environment, never by configuration:
 *   HOLDFAST_TEST_CRASH_AFTER=N    SIGKILL after the N-th counted mutation
 *   HOLDFAST_TEST_MUTATIONS=FILE   append one line per counted mutation ("put data/ab/…") to FILE,
 *                                  so a test can count them in a run that is not killed
 */
import { appendFileSync } from 'node:fs';
import type { Backend, ByteRange, Capabilities, DeleteOptions, ObjectInfo, ObjectWriter, PutData, PutOptions } from './backend.js';

export interface CrashSettings {
  readonly crashAfter?: number | undefined;
  readonly logFile?: string | undefined;
}

/** The settings from the environment, or undefined when crash injection is off. */
export function crashSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): CrashSettings | undefined {
  const n = env['HOLDFAST_TEST_CRASH_AFTER'];
  const logFile = env['HOLDFAST_TEST_MUTATIONS'] || undefined;
  const crashAfter = n && /^[1-9][0-9]*$/.test(n) ? Number(n) : undefined;
  return crashAfter === undefined && logFile === undefined ? undefined : { crashAfter, logFile };
}

export class CrashBackend implements Backend {
  private count = 0;

  constructor(
    private readonly inner: Backend,
    private readonly settings: CrashSettings,
  ) {}

  get location(): string {
    return this.inner.location;
  }

  get capabilities(): Capabilities {
    return this.inner.capabilities;
  }

  /** Count one mutation of `name` that has returned; die when it is the chosen one. */
  private mutated(op: string, name: string): void {
    if (name.startsWith('locks/')) return;
    this.count++;
    if (this.settings.logFile) appendFileSync(this.settings.logFile, `${op} ${name}\n`);
    if (this.count === this.settings.crashAfter) process.kill(process.pid, 'SIGKILL');
  }

  async put(name: string, data: PutData, options?: PutOptions): Promise<void> {
    await this.inner.put(name, data, options);
    this.mutated('put', name);
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.inner.get(name, range);
  }

  stat(name: string): Promise<ObjectInfo> {
    return this.inner.stat(name);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  async delete(name: string, options?: DeleteOptions): Promise<void> {
    await this.inner.delete(name, options);
    this.mutated('delete', name);
  }

  async openWriter(): Promise<ObjectWriter> {
    const w = await this.inner.openWriter();
    return {
      write: (parts) => w.write(parts),
      commit: async (name, options) => {
        await w.commit(name, options);
        this.mutated('commit', name);
      },
      abort: () => w.abort(),
    };
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
