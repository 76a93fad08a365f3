/**
 * `repair index`, `repair packs`, `repair snapshots` (docs/design.md §20). All take the exclusive
 * repository lock (taking it finishes the commits of stale locks, §8.2), have a dry run, and are
 * idempotent: a second run finds nothing to do.
 *
 * - index: rebuild the index from the packs' own headers. A pack whose header cannot be read is
 *   damaged: the blobs the old index places in it are read one by one, and those that decrypt
 *   and hash to their id are salvaged into new packs; then the damaged pack is removed.
 * - packs: the same, but every pack is read whole and must hash to its name, so a pack with a
 *   damaged blob is found and its readable blobs salvaged (what `check --read-data` reports).
 * - snapshots: a manifest or copy that is missing or damaged is rewritten from the other; a file
 *   snapshot that references missing data is rewritten without what is lost (files whose content
 *   is incomplete, directories whose tree is gone) and tagged `repaired`, the old one removed;
 *   with --forget such snapshots are removed instead. A PostgreSQL backup missing data is not
 *   rewritten (a data directory without some files is not a backup to recover from): it is
 *   reported, and --forget removes it.
 *
 * Walks are iterative with visited sets; nothing is allocated in proportion to a corrupt length.
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { IndexPack } from '../repository/index-file.js';
import { type PackEntry, PackFormatError, packName, parsePack } from '../repository/pack.js';
import type { Repository } from '../repository/repository.js';
import { sha256Hex } from '../repository/crypto.js';
import { type Snapshot, type SnapshotWithId, loadSnapshot, saveSnapshot } from '../repository/snapshot.js';
import { type Tree, type TreeNode, decodeTree, encodeTree } from '../files/tree.js';
import { Ticker } from '../ui/output.js';
import type { OpContext, RepoRef } from './context.js';
import { openRepository } from './repo.js';
import { withRepoLock } from './locking.js';

/** Largest pack repair reads whole: larger than anything holdfast writes. */
const MAX_PACK_BYTES = 1 << 30;
/** Lost paths listed per snapshot (the count is always exact). */
const MAX_LISTED = 1000;

export interface DamagedPack {
  id: string;
  reason: string;
  /** Blobs the pack was known to hold (header or old index). */
  blobs: number;
  /** Copied into new packs, or already stored in another healthy pack. */
  salvaged: number;
  /** Blobs that could not be read from it and exist nowhere else. */
  lost: string[];
}

export interface RepairIndexResult {
  dryRun: boolean;
  packs: number;
  /** Packs not listed by the old index, now listed (left by interrupted backups). */
  added: number;
  /** Packs the old index listed that are gone from storage. */
  vanished: number;
  unreadableIndexFiles: string[];
  damaged: DamagedPack[];
  /** Old index files replaced by the new index. */
  replaced: number;
  newPacks: number;
  changed: boolean;
}

export async function repairIndex(ref: RepoRef, p: { dryRun: boolean; readAll: boolean }, ctx: OpContext): Promise<RepairIndexResult> {
  const repo = await openRepository(ref, false);
  const state = { done: 0, total: 0, what: 'packs' };
  const ticker = new Ticker(ctx.log, () => `reading ${state.what}: ${state.done}/${state.total}`, ctx.progress);
  try {
    return await withRepoLock(repo, ref.location, ctx, 'exclusive', p.readAll ? 'repair packs' : 'repair index', () => rebuildIndex(repo, p, state, ctx), { allStorages: true });
  } finally {
    ticker.stop();
    await repo.close();
  }
}

async function rebuildIndex(repo: Repository, p: { dryRun: boolean; readAll: boolean }, state: { done: number; total: number; what: string }, ctx: OpContext): Promise<RepairIndexResult> {
  // The old index, leniently: where its readable files place blobs (for salvage).
  const unreadable: string[] = [];
  const old = await repo.readIndexFiles((id, err) => {
    unreadable.push(id);
    ctx.log.warn(`index file ${id.slice(0, 12)} is unreadable: ${err.message}`);
  });
  const oldPacks = new Map<string, IndexPack>();
  for (const f of old.files) {
    if (old.superseded.has(f.id)) continue;
    for (const pk of f.content.packs) if (!oldPacks.has(pk.id)) oldPacks.set(pk.id, pk);
  }

  const stored = await repo.listPacks();

  // Pass 1: which packs are healthy, with their own headers.
  const healthy: IndexPack[] = [];
  const damaged: Array<{ id: string; size: number; reason: string; header: PackEntry[] | undefined }> = [];
  state.total = stored.size;
  for (const [id, size] of [...stored].sort(([a], [b]) => a.localeCompare(b))) {
    state.done++;
    ctx.signal?.throwIfAborted();
    try {
      if (p.readAll) {
        if (size > MAX_PACK_BYTES) throw new Error(`${size} bytes, larger than any pack holdfast writes`);
        const data = await repo.backend.get(packName(id));
        let header: PackEntry[] | undefined;
        try {
          header = parsePack(repo.packKey(), data);
        } catch {
          header = undefined;
        }
        if (sha256Hex(data) !== id) {
          damaged.push({ id, size, reason: 'content does not match its name (SHA-256 mismatch)', header });
          continue;
        }
        if (!header) throw new PackFormatError('header unreadable');
        healthy.push({ id, size, entries: header });
      } else {
        healthy.push({ id, size, entries: await repo.readPackHeader(id, size) });
      }
    } catch (err) {
      if (err instanceof HoldfastError && err.code !== 'INTEGRITY' && err.code !== 'OBJECT_MISSING') throw err;
      damaged.push({ id, size, reason: err instanceof Error ? err.message : String(err), header: undefined });
    }
  }

  const vanished = [...oldPacks.keys()].filter((id) => !stored.has(id)).length;
  const added = healthy.filter((pk) => !oldPacks.has(pk.id)).length;
  // Blobs the old index places differently from the packs' own headers count as a change too.
  const differs = healthy.some((pk) => {
    const o = oldPacks.get(pk.id);
    return !o || o.entries.length !== pk.entries.length || o.size !== pk.size;
  });
  const changed = unreadable.length > 0 || damaged.length > 0 || vanished > 0 || added > 0 || differs;
  const result: RepairIndexResult = { dryRun: p.dryRun, packs: stored.size, added, vanished, unreadableIndexFiles: unreadable, damaged: [], replaced: 0, newPacks: 0, changed };

  // Pass 2: the new index in memory; salvage what damaged packs still hold.
  for (const pk of healthy) repo.index.add(pk);
  state.what = 'damaged packs';
  state.done = 0;
  state.total = damaged.length;
  for (const d of damaged) {
    state.done++;
    const entries = d.header ?? oldPacks.get(d.id)?.entries ?? [];
    const report: DamagedPack = { id: d.id, reason: d.reason, blobs: entries.length, salvaged: 0, lost: [] };
    result.damaged.push(report);
    let data: Buffer | undefined;
    try {
      if (d.size <= MAX_PACK_BYTES) data = await repo.backend.get(packName(d.id));
    } catch {
      data = undefined;
    }
    for (const e of entries) {
      const hex = e.id.toString('hex');
      if (repo.index.has(hex, e.type)) {
        report.salvaged++; // another healthy pack has it (or an earlier salvage)
        continue;
      }
      const plain = data && e.offset + e.length <= data.length ? await tryOpen(repo, e, data, d.id) : undefined;
      if (!plain) {
        report.lost.push(`${e.type}:${hex}`);
        continue;
      }
      report.salvaged++;
      if (!p.dryRun) await repo.saveBlob(e.type, plain, e.id);
      else repo.index.add({ id: `dry-run-${d.id}`, size: 0, entries: [e] });
    }
    ctx.log.debug(`pack ${d.id.slice(0, 12)} is damaged (${d.reason}): ${report.salvaged} of ${report.blobs} blob(s) salvaged, ${report.lost.length} lost`);
  }
  if (p.dryRun || !changed) return result;

  await repo.flush(); // salvaged blobs: new packs, durable, in their own index file
  result.newPacks = repo.addedPacks;
  const supersedes = [...new Set([...old.files.map((f) => f.id), ...unreadable])];
  await repo.saveIndexFiles(healthy, supersedes);
  result.replaced = supersedes.length;
  for (const id of supersedes) await repo.deleteFile('index', id);
  for (const d of damaged) await repo.deletePack(d.id);
  return result;
}

async function tryOpen(repo: Repository, e: PackEntry, data: Buffer, pack: string): Promise<Buffer | undefined> {
  try {
    return await repo.openBlob(e.type, e.id, data.subarray(e.offset, e.offset + e.length), e.rawLength, packName(pack));
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// snapshots

export interface RepairedSnapshot {
  id: string;
  /** 'copy-restored' / 'manifest-restored': one object rewritten from the other. */
  action: 'copy-restored' | 'manifest-restored' | 'rewritten' | 'forgotten' | 'unrepairable';
  /** The snapshot that replaces it (rewritten). */
  newId?: string;
  pg: boolean;
  /** Paths lost (at most MAX_LISTED), and how many in all. */
  lost: string[];
  lostCount: number;
  reason?: string;
}

export interface RepairedKey {
  id: string;
  action: 'copy-restored' | 'key-restored' | 'unrepairable';
  reason?: string;
}

export interface RepairSnapshotsResult {
  dryRun: boolean;
  snapshots: number;
  repaired: RepairedSnapshot[];
  /** Key files and their copies (the catalog's other records). */
  keys: RepairedKey[];
}

export async function repairSnapshots(ref: RepoRef, p: { dryRun: boolean; forget: boolean }, ctx: OpContext): Promise<RepairSnapshotsResult> {
  const repo = await openRepository(ref, false);
  try {
    return await withRepoLock(
      repo,
      ref.location,
      ctx,
      'exclusive',
      'repair snapshots',
      async () => {
        await repo.loadIndex((id, err) => {
          throw new HoldfastError('INTEGRITY', `index file ${id.slice(0, 12)} is unreadable (${err.message}): rebuild the index first`, { object: `index/${id}`, hint: 'Run `holdfast repair index`, then repair snapshots again.' });
        });
        return fixSnapshots(repo, p, ctx);
      },
      { allStorages: true },
    );
  } finally {
    await repo.close();
  }
}

async function fixSnapshots(repo: Repository, p: { dryRun: boolean; forget: boolean }, ctx: Pick<OpContext, 'signal'>): Promise<RepairSnapshotsResult> {
  const ids = await repo.listFiles('snapshot');
  const manifests = new Set(await repo.listSnapshotManifests());
  const copies = new Set(await repo.listSnapshotCopies());
  const result: RepairSnapshotsResult = { dryRun: p.dryRun, snapshots: ids.length, repaired: [], keys: [] };
  // Key files and their copies: a lost or damaged one is rewritten from the other.
  for (const k of await repo.listKeyFiles()) {
    if (k.primary === undefined && k.copy === undefined) continue;
    if (k.primary !== undefined && k.copy !== undefined) {
      result.keys.push({ id: k.id, action: 'unrepairable', reason: `the key file ${k.primary === 'missing' ? 'is missing' : 'is damaged'} and so is its copy: use another key's password (\`holdfast key list\`)` });
      continue;
    }
    const which = k.primary === undefined ? 'copy' : 'primary';
    result.keys.push({ id: k.id, action: which === 'copy' ? 'copy-restored' : 'key-restored' });
    if (!p.dryRun) await repo.restoreKeyObject(which, k.id);
  }
  const trees = new TreeRepair(repo, p.dryRun);
  const toForget: string[] = [];
  for (const id of ids) {
    ctx.signal?.throwIfAborted();
    // 1. Both records of the snapshot.
    const read = async (which: 'primary' | 'copy'): Promise<Buffer | undefined> => {
      if (!(which === 'primary' ? manifests : copies).has(id)) return undefined;
      try {
        return await repo.readSnapshotObject(which, id);
      } catch {
        return undefined;
      }
    };
    const primary = await read('primary');
    const copy = await read('copy');
    const bytes = primary ?? copy;
    if (!bytes) {
      const entry: RepairedSnapshot = { id, action: p.forget ? 'forgotten' : 'unrepairable', pg: false, lost: [], lostCount: 0, reason: 'its manifest and its copy are both missing or damaged' };
      result.repaired.push(entry);
      if (p.forget) toForget.push(id);
      continue;
    }
    if (!primary || !copy) {
      result.repaired.push({ id, action: primary ? 'copy-restored' : 'manifest-restored', pg: false, lost: [], lostCount: 0 });
      if (!p.dryRun) await repo.restoreSnapshotObject(primary ? 'copy' : 'primary', id, bytes);
    }
    // 2. Its data.
    const sn = await loadSnapshot(repo, id);
    const fixed = await trees.rewrite(sn.tree);
    if (fixed.lostCount === 0) continue;
    const pg = sn.pg !== undefined;
    const entry: RepairedSnapshot = { id, action: 'unrepairable', pg, lost: fixed.lost, lostCount: fixed.lostCount };
    result.repaired.push(entry);
    if (p.forget) {
      entry.action = 'forgotten';
      toForget.push(id);
    } else if (pg) {
      entry.reason = 'a PostgreSQL backup with files missing is not a data directory to recover from; --forget removes it';
    } else if (fixed.tree === undefined) {
      entry.reason = 'its root tree is lost: nothing is left to keep; --forget removes it';
    } else {
      entry.action = 'rewritten';
      if (!p.dryRun) {
        await repo.flush();
        entry.newId = await saveRewritten(repo, sn, fixed.tree, fixed.lostCount);
        await repo.deleteFile('snapshot', id);
      }
    }
  }
  if (!p.dryRun && toForget.length > 0) {
    await repo.announce([], toForget);
    for (const id of toForget) await repo.deleteFile('snapshot', id);
  }
  return result;
}

async function saveRewritten(repo: Repository, sn: SnapshotWithId, tree: string, lost: number): Promise<string> {
  const { id: _old, ...rest } = sn;
  const next: Snapshot = {
    ...rest,
    tree,
    tags: [...new Set([...sn.tags, 'repaired'])],
    original: sn.id,
    program: `${sn.program} (repaired: ${lost} path(s) lost)`,
  };
  return saveSnapshot(repo, next);
}

/**
 * Rewrites trees without what is lost: a file with a data blob the index lacks, a directory whose
 * tree is missing or unreadable. Memoised per tree id (shared subtrees are rewritten once); an
 * explicit stack instead of recursion; a tree that contains itself is cut there.
 */
class TreeRepair {
  private readonly memo = new Map<string, { tree: string | undefined; lost: string[]; lostCount: number }>();

  constructor(
    private readonly repo: Repository,
    private readonly dryRun: boolean,
  ) {}

  async rewrite(root: string): Promise<{ tree: string | undefined; lost: string[]; lostCount: number }> {
    type Frame = { id: string; tree: Tree; i: number; nodes: TreeNode[]; lost: string[]; lostCount: number; changed: boolean };
    const stack: Frame[] = [];
    const onStack = new Set<string>();
    const open = async (id: string): Promise<Frame | { tree: string | undefined; lost: string[]; lostCount: number }> => {
      const known = this.memo.get(id);
      if (known) return known;
      if (onStack.has(id)) return { tree: undefined, lost: [''], lostCount: 1 }; // contains itself: cut here
      let tree: Tree;
      try {
        if (!this.repo.index.has(id, 'tree')) throw new Error('missing');
        tree = decodeTree(await this.repo.loadBlob('tree', id), id);
      } catch {
        const gone = { tree: undefined, lost: [''], lostCount: 1 };
        this.memo.set(id, gone);
        return gone;
      }
      onStack.add(id);
      return { id, tree, i: 0, nodes: [], lost: [], lostCount: 0, changed: false };
    };
    const first = await open(root);
    if (!('i' in first)) return first;
    stack.push(first);
    let done: { tree: string | undefined; lost: string[]; lostCount: number } | undefined;
    while (stack.length > 0) {
      const f = stack[stack.length - 1]!;
      if (f.i < f.tree.nodes.length) {
        const n = f.tree.nodes[f.i]!;
        if (n.type === 'dir' && n.subtree) {
          const sub = await open(n.subtree);
          if ('i' in sub) {
            stack.push(sub); // comes back to this node once the subtree is done
            continue;
          }
          f.i++;
          applyChild(f, n, sub);
          continue;
        }
        f.i++;
        const missing = n.type === 'file' ? (n.content ?? []).some((b) => !this.repo.index.has(b, 'data')) : false;
        if (missing) {
          f.changed = true;
          f.lostCount++;
          if (f.lost.length < MAX_LISTED) f.lost.push(n.name);
        } else f.nodes.push(n);
        continue;
      }
      stack.pop();
      onStack.delete(f.id);
      let id: string | undefined = f.id;
      if (f.changed) id = this.dryRun ? `dry-run-${f.id}` : (await this.repo.saveBlob('tree', encodeTree({ nodes: f.nodes }))).id.toString('hex');
      const out = { tree: id, lost: f.lost, lostCount: f.lostCount };
      this.memo.set(f.id, out);
      const parent = stack[stack.length - 1];
      if (parent) {
        const n = parent.tree.nodes[parent.i]!;
        parent.i++;
        applyChild(parent, n, out);
      } else done = out;
    }
    return done!;
  }
}

function applyChild(f: { nodes: TreeNode[]; lost: string[]; lostCount: number; changed: boolean }, n: TreeNode, sub: { tree: string | undefined; lost: string[]; lostCount: number }): void {
  if (sub.lostCount > 0) {
    f.changed = true;
    f.lostCount += sub.lostCount;
    for (const l of sub.lost) if (f.lost.length < MAX_LISTED) f.lost.push(l === '' ? `${n.name}/` : `${n.name}/${l}`);
  }
  if (sub.tree === undefined) return; // the directory is gone
  f.nodes.push(sub.tree === n.subtree ? n : { ...n, subtree: sub.tree });
}
