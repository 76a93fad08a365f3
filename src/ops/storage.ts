/**
 * `storage status` and `storage sync` (docs/design.md §19): the health of each storage of a
 * repository, and copying what one storage has and another lacks.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Backend, ObjectInfo } from '../storage/backend.js';
import { StorageError } from '../storage/backend.js';
import { MultiBackend, type StorageHealth, everywhere } from '../storage/multi.js';
import { storageToHoldfast } from '../repository/repository.js';
import type { OpContext, RepoRef } from './context.js';
import { withRepoLock } from './locking.js';
import { openBackend, openRepository } from './repo.js';

export interface StorageStatusEntry {
  location: string;
  role: 'primary' | 'secondary';
  /** The status other processes would use (cache), before this check. */
  cached: StorageHealth | undefined;
  /** Established now by a probe. */
  now: StorageHealth;
}

export interface StorageStatusResult {
  mode: 'single' | 'failover' | 'replicate';
  storages: StorageStatusEntry[];
}

/** Probe every storage now (the cache is updated), and report it with what the cache said before. */
export async function storageStatus(ref: RepoRef): Promise<StorageStatusResult> {
  const backend = await openBackend(ref.location, ref.storage);
  try {
    if (!(backend instanceof MultiBackend)) {
      const single = new MultiBackend([{ location: ref.location, backend }], { mode: 'failover', statusTtlMs: 0, probeTimeoutMs: ref.storage?.probeTimeoutMs ?? 5000 }, { get: () => undefined, set: () => undefined });
      return { mode: 'single', storages: [{ location: ref.location, role: 'primary', cached: undefined, now: await single.probe(0) }] };
    }
    const storages: StorageStatusEntry[] = [];
    for (const [i, m] of backend.members.entries()) {
      const cached = backend.cached(i);
      storages.push({ location: m.location, role: i === 0 ? 'primary' : 'secondary', cached, now: await backend.probe(i) });
    }
    return { mode: ref.storage?.mode ?? 'failover', storages };
  } finally {
    await backend.close();
  }
}

export interface SyncResult {
  copied: Array<{ name: string; from: string; to: string; size: number }>;
  conflicts: Array<{ name: string; sizes: Record<string, number> }>;
  bytes: number;
}

/** What sync never copies: lock objects belong to their holders, probes are transient. */
function synced(name: string): boolean {
  return !name.startsWith('locks/') && !name.startsWith('probes/');
}

/**
 * Copy objects a storage lacks: in failover mode what landed on a secondary to the primary, in
 * replicate mode to every storage that misses it. Every storage must be usable. Holds the
 * maintenance lock, so no prune deletes what is being copied back. Objects are immutable or
 * create-only, so a copy is create-only and an existing name is never overwritten; a name whose
 * sizes differ between storages is reported as a conflict and left alone.
 */
export async function storageSync(ref: RepoRef, ctx: OpContext, dryRun = false): Promise<SyncResult> {
  const repo = await openRepository(ref, false);
  try {
    const multi = repo.backend;
    if (!(multi instanceof MultiBackend)) {
      throw new HoldfastError('USAGE', `the repository at ${ref.location} has a single storage: there is nothing to sync`, { hint: 'storage sync is for repositories with secondary storages (--repo-secondary).' });
    }
    return await withRepoLock(repo, ref.location, ctx, 'maintenance', 'storage sync', async () => {
      const listings: Array<Map<string, ObjectInfo>> = [];
      for (const m of multi.members) {
        const here = new Map<string, ObjectInfo>();
        try {
          for await (const o of m.backend.list('')) if (synced(o.name)) here.set(o.name, o);
        } catch (err) {
          throw storageToHoldfast(err, m.backend);
        }
        listings.push(here);
      }
      const result: SyncResult = { copied: [], conflicts: [], bytes: 0 };
      const names = new Set<string>();
      for (const l of listings) for (const n of l.keys()) names.add(n);
      const all = multi.members.map((_, i) => i);
      for (const name of [...names].sort()) {
        const targets = ref.storage?.mode === 'replicate' || everywhere(name) ? all : [0];
        ctx.signal?.throwIfAborted();
        const holders = listings.flatMap((l, i) => (l.has(name) ? [i] : []));
        const sizes = new Set(holders.map((i) => listings[i]!.get(name)!.size));
        if (sizes.size > 1) {
          result.conflicts.push({ name, sizes: Object.fromEntries(holders.map((i) => [multi.members[i]!.location, listings[i]!.get(name)!.size])) });
          continue;
        }
        for (const t of targets) {
          if (listings[t]!.has(name)) continue;
          const from = holders[0]!;
          const size = listings[from]!.get(name)!.size;
          if (!dryRun) await copy(multi.members[from]!.backend, multi.members[t]!.backend, name);
          result.copied.push({ name, from: multi.members[from]!.location, to: multi.members[t]!.location, size });
          result.bytes += size;
        }
      }
      for (const c of result.conflicts) ctx.log.warn(`${c.name} differs between storages (${Object.entries(c.sizes).map(([l, s]) => `${s} bytes on ${l}`).join(', ')}); left as it is: run \`holdfast check\``);
      return result;
    }, { allStorages: true });
  } finally {
    await repo.close();
  }
}

async function copy(from: Backend, to: Backend, name: string): Promise<void> {
  let data: Buffer;
  try {
    data = await from.get(name);
  } catch (err) {
    throw storageToHoldfast(err, from, name);
  }
  try {
    await to.put(name, data, { createOnly: true });
  } catch (err) {
    if (err instanceof StorageError && err.kind === 'exists') return; // arrived meanwhile
    throw storageToHoldfast(err, to, name);
  }
}
