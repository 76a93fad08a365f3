/**
 * `prune`: remove data no snapshot or backup references, safely while backups, restores and
 * archive-push run (docs/design.md §18).
 *
 * Two phases, so that nothing a running operation may still use is deleted:
 *
 * 1. **Plan and unlist.** Under a maintenance lock (one prune at a time; shared holders run on),
 *    read the index and walk every snapshot for the blobs in use. Packs with no used blob are to
 *    be deleted; packs whose unused share exceeds --max-unused are repacked (their used blobs
 *    copied, still sealed, into new packs) while the repository's unused share is above
 *    --max-unused, within --max-repack-size. A new index without those packs supersedes every
 *    index file read. Then a **mark** `prune/<id>` records the packs and superseded index files
 *    to delete and the repository locks that existed after the new index was committed.
 * 2. **Delete**, once none of the mark's locks is still held (each holder loaded the index after
 *    taking its lock, so a holder that could know of an unlisted pack holds a lock in the mark):
 *    walk the snapshots written since, and any blob they use that is no longer indexed elsewhere
 *    puts its pack back into the index instead of deleting it; delete the rest, the superseded
 *    index files, and the mark.
 *
 * Phase 2 runs right after phase 1 when no other blob-using lock is held, else in a later prune
 * (every prune first finishes the marks it can). Killed at any point, the repository stays
 * consistent: a pack is unlisted only after its replacement is durable and listed, and deleted
 * only once unlisted and unused; packs left unindexed are found again as orphans.
 */
import { randomBytes } from 'node:crypto';
import { HoldfastError } from '../errors/catalogue.js';
import { decodeTree } from '../files/tree.js';
import { RepositoryLockStore } from '../locks/repository.js';
import { type LockName, type LockRecord, describeRecord, judge } from '../locks/protocol.js';
import type { IndexPack } from '../repository/index-file.js';
import { type BlobType, type PackEntry, packName, parsePack } from '../repository/pack.js';
import { type IndexFiles, MasterIndex, type Repository, storageToHoldfast } from '../repository/repository.js';
import { listSnapshotIds, loadSnapshot } from '../repository/snapshot.js';
import { Ticker } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { usesBlobs, withRepoLock } from './locking.js';
import { openRepository } from './repo.js';

export interface PruneParams {
  /** Repack while more than this percentage of the stored pack bytes is unused (and only packs above it). */
  readonly maxUnusedPercent: number;
  /** At most this many bytes of packs are repacked (undefined: no bound). */
  readonly maxRepackBytes?: number | undefined;
  readonly dryRun: boolean;
}

export interface PruneResult {
  dryRun: boolean;
  /** Packs and bytes in the index before, and what the plan does with them. */
  packs: { total: number; deleted: number; repacked: number; orphans: number; written: number; kept: number; relisted: number };
  bytes: { total: number; unused: number; deleted: number; repacked: number; orphans: number; written: number; freed: number; unusedAfter: number };
  blobs: { used: number; unused: number };
  snapshots: number;
  /** Marks of earlier prunes finished in this run (their packs deleted), and those still waiting. */
  earlierFinished: number;
  pending: Array<{ mark: string; packs: number; bytes: number; waitingFor: string[] }>;
  durationMs: number;
}

/** The plan's bound on a single pack read into memory (holdfast writes 16 MiB packs by default). */
const MAX_PACK_BYTES = 1 << 30;
const MARK_PREFIX = 'prune/';

interface Mark {
  v: 1;
  created: number;
  /** Packs to delete: unlisted from the index by the prune that wrote the mark. */
  packs: Array<{ id: string; size: number }>;
  /** Index files superseded, to delete. */
  indexes: string[];
  /** Repository locks (ids) that existed after the new index was committed. */
  locks: string[];
}

export async function prune(ref: RepoRef, p: PruneParams, ctx: OpContext): Promise<PruneResult> {
  if (!(p.maxUnusedPercent >= 0 && p.maxUnusedPercent <= 100)) throw new HoldfastError('USAGE', `--max-unused must be a percentage from 0 to 100, not ${p.maxUnusedPercent}`, {});
  const repo = await openRepository(ref, false);
  try {
    return await withRepoLock(repo, ref.location, ctx, 'maintenance', 'prune', (lockedCtx) => new Pruner(repo, new RepositoryLockStore(repo, ref.location), p, lockedCtx).run(), { allStorages: !p.dryRun });
  } finally {
    await repo.close();
  }
}

/** `type:id` (binary id) for sets of blobs. */
function blobKey(type: BlobType, id: Buffer | string): string {
  return (type === 'data' ? 'd' : 't') + (typeof id === 'string' ? Buffer.from(id, 'hex') : id).toString('latin1');
}

class Pruner {
  private readonly started = Date.now();
  /** Blobs used by the snapshots walked so far, and those snapshots. */
  private readonly used = new Set<string>();
  private readonly walked = new Set<string>();
  private readonly progress = { what: '', done: 0, total: 0 };
  private readonly result: PruneResult;

  constructor(
    private readonly repo: Repository,
    private readonly locks: RepositoryLockStore,
    private readonly p: PruneParams,
    private readonly ctx: OpContext,
  ) {
    this.result = {
      dryRun: p.dryRun,
      packs: { total: 0, deleted: 0, repacked: 0, orphans: 0, written: 0, kept: 0, relisted: 0 },
      bytes: { total: 0, unused: 0, deleted: 0, repacked: 0, orphans: 0, written: 0, freed: 0, unusedAfter: 0 },
      blobs: { used: 0, unused: 0 },
      snapshots: 0,
      earlierFinished: 0,
      pending: [],
      durationMs: 0,
    };
  }

  async run(): Promise<PruneResult> {
    const ticker = new Ticker(this.ctx.log, () => `${this.progress.what}${this.progress.total > 0 ? ` ${this.progress.done}/${this.progress.total}` : ''}`, this.ctx.progress);
    try {
      // Which marks may be finished is decided on the locks listed before the walk: the
      // snapshots of holders gone by then are all visible to it.
      const marks = await this.readMarks();
      const ready = new Map<string, boolean>();
      for (const [name, mark] of marks) ready.set(name, (await this.waitingFor(mark)).length === 0);
      let index = await this.readIndex();
      await this.walkSnapshots(index, marks);
      await this.relist(index, marks);
      let finished = false;
      for (const [name, mark] of marks) {
        if (ready.get(name) && !this.p.dryRun) {
          await this.finishMark(name, mark, index);
          marks.delete(name);
          finished = true;
          this.result.earlierFinished++;
        }
      }
      if (finished) index = await this.readIndex(); // their superseded index files are gone
      const marked = new Set<string>();
      for (const mark of marks.values()) for (const pk of mark.packs) marked.add(pk.id);
      const own = await this.unlist(index, marked);
      if (own) marks.set(own.name, own.mark);
      // Finish this run's mark now if nothing that could still use its packs is running.
      if (own && (await this.waitingFor(own.mark)).length === 0) {
        const fresh = await this.readIndex();
        await this.walkSnapshots(fresh, marks);
        await this.relist(fresh, marks);
        await this.finishMark(own.name, own.mark, fresh);
        marks.delete(own.name);
      }
      for (const [name, mark] of marks) {
        const bytes = mark.packs.reduce((n, pk) => n + pk.size, 0);
        this.result.pending.push({ mark: name, packs: mark.packs.length, bytes, waitingFor: await this.waitingFor(mark) });
      }
    } finally {
      ticker.stop();
    }
    this.result.durationMs = Date.now() - this.started;
    return this.result;
  }

  // ------------------------------------------------------------------ reading

  private async readMarks(): Promise<Map<string, Mark>> {
    const marks = new Map<string, Mark>();
    for (const name of await this.repo.listNamed(MARK_PREFIX)) {
      if (!/^[0-9a-f]{24}$/.test(name)) continue;
      const full = MARK_PREFIX + name;
      const plain = await this.repo.getNamed(full);
      if (!plain) continue; // finished by a prune killed after deleting it: nothing to do
      marks.set(full, parseMark(full, plain));
    }
    return marks;
  }

  /** The live (not stale) repository locks whose names `pick` selects. */
  private async liveLocks(pick: (name: LockName) => boolean): Promise<LockRecord[]> {
    const out: LockRecord[] = [];
    for (const name of await this.locks.list()) {
      if (!pick(name)) continue;
      const rec = await this.locks.read(name);
      if (rec !== 'gone' && rec !== 'unreadable' && !judge(rec).stale) out.push(rec);
    }
    return out;
  }

  /** Descriptions of the mark's locks that are still held. */
  private async waitingFor(mark: Mark): Promise<string[]> {
    const want = new Set(mark.locks);
    return (await this.liveLocks((n) => want.has(n.id))).map((rec) => describeRecord(rec));
  }

  /** Locks held now (other than prune's own) by operations that may use blobs. */
  private async blobLocks(): Promise<LockRecord[]> {
    return (await this.liveLocks((n) => n.kind !== 'maintenance')).filter((rec) => usesBlobs(rec.operation));
  }

  private async readIndex(): Promise<ReadIndex> {
    this.progress.what = 'reading the index';
    const read = await this.repo.readIndexFiles();
    const master = new MasterIndex();
    const packs = new Map<string, IndexPack>();
    for (const { id, content } of read.files) {
      if (read.superseded.has(id)) continue;
      for (const pk of content.packs) {
        master.add(pk);
        if (!packs.has(pk.id)) packs.set(pk.id, pk);
      }
    }
    return { ...read, master, packs };
  }

  /**
   * Add the blobs used by every snapshot not walked yet. A tree the index does not list is looked
   * for in the packs of the marks (a backup that ran during a prune may have reused it); data
   * blobs are only recorded (`relist` deals with those the index lacks). Any other damage stops
   * the prune: what a damaged snapshot uses cannot be known, so nothing may be deleted.
   */
  private async walkSnapshots(index: ReadIndex, marks: Map<string, Mark>): Promise<void> {
    const ids = (await listSnapshotIds(this.repo)).filter((id) => !this.walked.has(id));
    this.progress.what = 'reading snapshots';
    this.progress.total = ids.length;
    this.progress.done = 0;
    for (const sid of ids) {
      this.ctx.signal?.throwIfAborted();
      let root: string;
      try {
        root = (await loadSnapshot(this.repo, sid)).tree;
      } catch (err) {
        if (err instanceof HoldfastError && err.code === 'OBJECT_MISSING') continue; // forgotten meanwhile
        throw damaged(`snapshot ${sid} cannot be read`, err);
      }
      const stack = [root];
      while (stack.length > 0) {
        const tid = stack.pop()!;
        const key = blobKey('tree', tid);
        if (this.used.has(key)) continue;
        this.used.add(key);
        const loc = index.master.get(tid, 'tree') ?? (await this.unlisted(marks)).get(tid, 'tree');
        if (!loc) throw damaged(`tree ${tid} of snapshot ${sid.slice(0, 8)} is in no pack`);
        let nodes;
        try {
          nodes = decodeTree(await this.repo.loadBlobAt('tree', tid, loc), tid).nodes;
        } catch (err) {
          throw damaged(`tree ${tid} of snapshot ${sid.slice(0, 8)} cannot be read`, err);
        }
        for (const n of nodes) {
          if (n.subtree) stack.push(n.subtree);
          for (const b of n.content ?? []) this.used.add(blobKey('data', b));
        }
      }
      this.walked.add(sid);
      this.progress.done++;
    }
    this.result.snapshots = this.walked.size;
  }

  private unlistedIndex: { index: MasterIndex; packs: Map<string, IndexPack> } | undefined;

  /** The blobs of the marks' packs that still exist (their headers, read once per run). */
  private async unlisted(marks: Map<string, Mark>): Promise<MasterIndex> {
    if (!this.unlistedIndex) {
      const index = new MasterIndex();
      const packs = new Map<string, IndexPack>();
      for (const mark of marks.values()) {
        for (const pk of mark.packs) {
          if (packs.has(pk.id)) continue;
          let entries: PackEntry[];
          try {
            entries = await this.repo.readPackHeader(pk.id, pk.size);
          } catch (err) {
            if (err instanceof HoldfastError && err.code === 'OBJECT_MISSING') continue; // deleted by a killed prune
            throw err;
          }
          const ip = { id: pk.id, size: pk.size, entries };
          packs.set(pk.id, ip);
          index.add(ip);
        }
      }
      this.unlistedIndex = { index, packs };
    }
    return this.unlistedIndex.index;
  }

  /**
   * Put back into the index every unlisted pack that holds a used blob the index lacks (a backup
   * that started before the prune reused it). A used blob in no pack at all is damage: stop.
   */
  private async relist(index: ReadIndex, marks: Map<string, Mark>): Promise<void> {
    const missing: string[] = [];
    for (const k of this.used) if (!index.master.has(hexOf(k), typeOf(k))) missing.push(k);
    if (missing.length === 0) return;
    await this.unlisted(marks);
    const { packs } = this.unlistedIndex!;
    const back = new Map<string, IndexPack>();
    for (const k of missing) {
      const loc = this.unlistedIndex!.index.get(hexOf(k), typeOf(k));
      if (!loc) throw damaged(`${typeOf(k)} blob ${hexOf(k)} is used by a snapshot but is in no pack`);
      back.set(loc.pack, packs.get(loc.pack)!);
    }
    const list = [...back.values()];
    this.result.packs.relisted += list.length;
    // A dry run plans as if they were listed again (they would be), writing nothing.
    if (!this.p.dryRun) await this.repo.saveIndexFiles(list, []);
    for (const pk of list) {
      index.master.add(pk);
      index.packs.set(pk.id, pk);
    }
    this.ctx.log.info(`${list.length} pack(s) ${this.p.dryRun ? 'would be ' : ''}listed again: a backup that ran during a prune uses blobs in them`);
  }

  // ------------------------------------------------------------------ phase 1

  /** Plan, repack, commit the new index and write the mark; undefined when nothing is to be removed. */
  private async unlist(index: ReadIndex, marked: Set<string>): Promise<{ name: string; mark: Mark } | undefined> {
    const stored = await this.repo.listPacks();
    // The copy of each used blob that stays: the first stored pack (in id order) that has it.
    const owner = new Map<string, string>();
    const plan = [...index.packs.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const pk of plan) {
      if (stored.get(pk.id) !== pk.size) continue;
      for (const e of pk.entries) {
        const k = blobKey(e.type, e.id);
        if (this.used.has(k) && !owner.has(k)) owner.set(k, pk.id);
      }
    }
    for (const k of this.used) {
      if (!owner.has(k)) throw new HoldfastError('INTEGRITY', `prune stopped before deleting anything: blob ${Buffer.from(k.slice(1), 'latin1').toString('hex')} is used but no stored pack of the right size holds it`, { hint: 'Run `holdfast check` to see which packs are missing or damaged.' });
    }
    const r = this.result;
    const owns = (pk: IndexPack, e: PackEntry): boolean => owner.get(blobKey(e.type, e.id)) === pk.id;
    const drop: Array<{ id: string; size: number }> = [];
    const candidates: Array<{ pk: IndexPack; used: number; unused: number }> = [];
    const kept = new Map<string, IndexPack>();
    let keptBytes = 0;
    let unusedLeft = 0;
    for (const pk of plan) {
      const size = stored.get(pk.id);
      r.packs.total++;
      r.bytes.total += pk.size;
      // Unused: the blobs this pack does not own (unused ones, and copies another pack owns).
      let used = 0;
      let unused = 0;
      let usedCount = 0;
      for (const e of pk.entries) {
        if (owns(pk, e)) {
          used += e.length;
          usedCount++;
        } else unused += e.length;
      }
      r.blobs.used += usedCount;
      r.blobs.unused += pk.entries.length - usedCount;
      if (size !== pk.size) {
        // Missing or of the wrong size: it owns nothing (checked above); only its listing goes.
        this.ctx.log.warn(`pack ${pk.id} is in the index but ${size === undefined ? 'missing from storage' : `has ${size} bytes instead of ${pk.size}`}; removing it from the index (no snapshot uses it)`);
        if (size !== undefined) drop.push({ id: pk.id, size });
        continue;
      }
      r.bytes.unused += unused;
      if (usedCount === 0) {
        drop.push({ id: pk.id, size: pk.size });
        r.packs.deleted++;
        r.bytes.deleted += pk.size;
      } else {
        kept.set(pk.id, pk);
        keptBytes += pk.size;
        unusedLeft += unused;
        if (unused > 0 && (unused * 100) / pk.size > this.p.maxUnusedPercent) candidates.push({ pk, used, unused });
      }
    }
    // Repack the most wasteful packs first, while the repository's unused share is above the limit.
    candidates.sort((a, b) => b.unused / b.pk.size - a.unused / a.pk.size || (a.pk.id < b.pk.id ? -1 : 1));
    const repack: typeof candidates = [];
    let budget = this.p.maxRepackBytes ?? Infinity;
    for (const c of candidates) {
      if (keptBytes === 0 || (unusedLeft * 100) / keptBytes <= this.p.maxUnusedPercent) break;
      if (c.pk.size > budget) continue;
      budget -= c.pk.size;
      repack.push(c);
      unusedLeft -= c.unused;
      keptBytes -= c.unused;
    }
    // Packs in storage that no index lists: left by interrupted backups or prunes (or written by
    // a backup still running: the mark's locks make phase 2 wait for it).
    const orphans: Array<{ id: string; size: number }> = [];
    for (const [id, size] of stored) if (!index.packs.has(id) && !marked.has(id)) orphans.push({ id, size });
    r.packs.orphans = orphans.length;
    r.packs.repacked = repack.length;
    r.bytes.repacked = repack.reduce((n, c) => n + c.pk.size, 0);
    r.bytes.unusedAfter = unusedLeft;
    r.bytes.orphans = orphans.reduce((n, o) => n + o.size, 0);
    // Estimated for --dry-run (the copies' size); measured below otherwise.
    r.bytes.written = repack.reduce((n, c) => n + c.used, 0);
    r.bytes.freed = r.bytes.deleted + r.bytes.repacked + r.bytes.orphans - r.bytes.written;
    r.packs.kept = kept.size - repack.length;
    const superseded = index.files.map((f) => f.id);
    const staleIndexes = index.files.filter((f) => index.superseded.has(f.id)).length;
    if (drop.length === 0 && repack.length === 0 && orphans.length === 0 && staleIndexes === 0) return undefined;
    if (this.p.dryRun) return undefined;

    // Repack: copy the used blobs, still sealed, after verifying each.
    for (const [i, c] of repack.entries()) {
      this.ctx.signal?.throwIfAborted();
      this.progress.what = 'repacking';
      this.progress.done = i;
      this.progress.total = repack.length;
      await this.copyUsed(c.pk, owner);
      kept.delete(c.pk.id);
      drop.push({ id: c.pk.id, size: c.pk.size });
    }
    await this.repo.flush(); // the new packs, durable and listed in their own index file
    r.packs.written = this.repo.addedPacks;
    r.bytes.written = this.repo.addedBytes;
    r.bytes.freed = r.bytes.deleted + r.bytes.repacked + r.bytes.orphans - r.bytes.written;

    // The new index: every kept pack, in files of PACKS_PER_INDEX; the last one supersedes every
    // index file read, which is the atomic switch (before it, the old files still list everything).
    this.progress.what = 'writing the index';
    this.progress.total = 0;
    await this.repo.saveIndexFiles([...kept.values()], superseded);
    // Which locks could know of the unlisted packs: those that exist now (a lock taken later
    // belongs to an operation that loads the new index).
    const locks = await this.blobLocks();
    const mark: Mark = { v: 1, created: Date.now(), packs: [...drop, ...orphans], indexes: superseded, locks: locks.map((l) => l.id) };
    const name = MARK_PREFIX + randomBytes(12).toString('hex');
    await this.repo.putNamed(name, Buffer.from(JSON.stringify(mark)), { createOnly: true });
    return { name, mark };
  }

  /** Copy the blobs `pk` owns into the open packs, each verified on the way. */
  private async copyUsed(pk: IndexPack, owner: Map<string, string>): Promise<void> {
    if (pk.size > MAX_PACK_BYTES) throw new HoldfastError('INTEGRITY', `pack ${pk.id} is ${pk.size} bytes, larger than any pack holdfast writes`, { object: packName(pk.id) });
    let data: Buffer;
    try {
      data = await this.repo.backend.get(packName(pk.id));
    } catch (err) {
      throw storageToHoldfast(err, this.repo.backend, packName(pk.id));
    }
    const entries: PackEntry[] = parsePack(this.repo.packKey(), data);
    for (const e of entries) {
      if (owner.get(blobKey(e.type, e.id)) !== pk.id) continue;
      const sealed = data.subarray(e.offset, e.offset + e.length);
      await this.repo.openBlob(e.type, e.id, sealed, e.rawLength, packName(pk.id)); // verify before copying
      await this.repo.addSealedBlob(e.type, e.id, { parts: [Buffer.from(sealed)], length: sealed.length }, e.rawLength);
    }
  }

  // ------------------------------------------------------------------ phase 2

  /**
   * Delete what `mark` lists, now that none of its locks is held and `relist` has put back every
   * pack a snapshot needs: packs the index does not list, the superseded index files, the mark.
   */
  private async finishMark(name: string, mark: Mark, index: ReadIndex): Promise<void> {
    this.progress.what = 'deleting';
    this.progress.total = mark.packs.length;
    this.progress.done = 0;
    for (const pk of mark.packs) {
      this.ctx.signal?.throwIfAborted();
      this.progress.done++;
      if (!index.packs.has(pk.id)) await this.repo.deletePack(pk.id);
    }
    for (const id of mark.indexes) if (index.superseded.has(id)) await this.repo.deleteFile('index', id);
    await this.repo.deleteNamed(name);
  }
}

type ReadIndex = IndexFiles & { master: MasterIndex; packs: Map<string, IndexPack> };

function hexOf(key: string): string {
  return Buffer.from(key.slice(1), 'latin1').toString('hex');
}

function typeOf(key: string): BlobType {
  return key[0] === 'd' ? 'data' : 'tree';
}

function damaged(what: string, err?: unknown): HoldfastError {
  return new HoldfastError('INTEGRITY', `prune stopped before deleting anything: ${what}${err instanceof Error ? `: ${err.message}` : ''}`, { hint: 'Run `holdfast check` to see the damage; prune runs only on a repository whose snapshots are all readable.' });
}

function parseMark(name: string, plain: Buffer): Mark {
  let m: unknown;
  try {
    m = JSON.parse(plain.toString('utf8'));
  } catch {
    m = undefined;
  }
  const o = m as Partial<Mark> | undefined;
  const ids = (a: unknown, re: RegExp): boolean => Array.isArray(a) && a.every((x) => typeof x === 'string' && re.test(x));
  if (
    !o ||
    o.v !== 1 ||
    typeof o.created !== 'number' ||
    !Array.isArray(o.packs) ||
    !o.packs.every((pk) => typeof pk === 'object' && pk !== null && typeof pk.id === 'string' && /^[0-9a-f]{64}$/.test(pk.id) && Number.isSafeInteger(pk.size) && pk.size >= 0) ||
    !ids(o.indexes, /^[0-9a-f]{64}$/) ||
    !ids(o.locks, /^[0-9a-f]{24}$/)
  ) {
    throw new HoldfastError('INTEGRITY', `${name}: not a valid prune mark`, { object: name, hint: 'Run `holdfast check`; the mark can be removed by hand only if no prune is running.' });
  }
  return o as Mark;
}
