/**
 * Repository locks: small sealed objects `locks/<s|m|x>-<id>` in the repository (docs/design.md
 * §15). Shared for backup, archive-push, restore and check; exclusive for prune, expire, repair
 * and key removal. Created with create-only puts (O_EXCL-style link locally, `If-None-Match: *`
 * on stores that support it), refreshed on a heartbeat, judged stale by protocol.ts. Written and
 * deleted without fsync (`durable: false`): a lock lost or torn by a machine crash belonged to a
 * process that crash killed, and an unreadable lock is stale.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { type LockName, type LockRecord, type LockStore, decodeRecord, encodeRecord, lockFileName, parseLockFileName } from './protocol.js';

export const LOCKS_PREFIX = 'locks/';

export class RepositoryLockStore implements LockStore {
  readonly where: string;

  constructor(
    private readonly repo: Repository,
    location: string,
  ) {
    this.where = `repository ${location}`;
  }

  private name(n: LockName): string {
    return `${LOCKS_PREFIX}${lockFileName(n)}`;
  }

  async create(rec: LockRecord): Promise<void> {
    const { created } = await this.repo.putNamed(this.name(rec), encodeRecord(rec), { createOnly: true, durable: false });
    if (!created) throw new HoldfastError('INTERNAL', `lock ${this.name(rec)} already exists (random id collision)`);
  }

  async write(rec: LockRecord, durable = false): Promise<void> {
    await this.repo.putNamed(this.name(rec), encodeRecord(rec), durable ? {} : { durable: false });
  }

  async list(): Promise<LockName[]> {
    const out: LockName[] = [];
    for (const n of await this.repo.listNamed(LOCKS_PREFIX)) {
      const parsed = parseLockFileName(n);
      if (parsed) out.push(parsed);
    }
    return out;
  }

  async read(n: LockName): Promise<LockRecord | 'gone' | 'unreadable'> {
    let plain: Buffer | undefined;
    try {
      plain = await this.repo.getNamed(this.name(n));
    } catch (err) {
      if (err instanceof HoldfastError && err.code === 'INTEGRITY') return 'unreadable';
      throw err;
    }
    if (plain === undefined) return 'gone';
    return decodeRecord(n, plain);
  }

  async exists(n: LockName): Promise<boolean> {
    return this.repo.hasNamed(this.name(n));
  }

  async remove(n: LockName): Promise<void> {
    await this.repo.deleteNamed(this.name(n), { durable: false });
  }
}
