/**
 * Repository checker. Never throws on damage: every problem is collected with the object it is
 * about and the snapshots it affects.
 *
 * Structure: index files load; every indexed pack exists with the indexed size and its header
 * agrees with the index; every snapshot loads; every tree loads and validates; every referenced
 * data blob is indexed in a healthy pack. With `readData` every pack is read whole: its SHA-256
 * must match its name and every blob must decrypt and hash to its id; a pack damaged as a whole
 * (wrong size, wrong hash, unreadable header) then has each indexed blob verified where the index
 * places it, as restore reads it, so only the snapshots using a blob that no longer reads are
 * named (without `readData`, every snapshot using the pack).
 *
 * Trees are walked iteratively (explicit stack) with a memo per tree id, so shared subtrees are
 * analysed once and a cyclic reference (only possible in a forged repository) is reported rather
 * than followed.
 */
import { HoldfastError } from '../errors/catalogue.js';
import { isNotFound } from '../storage/backend.js';
import type { BlobLocation, Repository } from '../repository/repository.js';
import { packName, parsePack, type PackEntry } from '../repository/pack.js';
import { listSnapshotIds, loadSnapshot } from '../repository/snapshot.js';
import { sha256Hex } from '../repository/crypto.js';
import { decodeTree } from '../files/tree.js';

export type ProblemKind =
  | 'key-damaged'
  | 'key-missing'
  | 'key-copy-missing'
  | 'index-unreadable'
  | 'index-conflict'
  | 'pack-missing'
  | 'pack-size'
  | 'pack-corrupt'
  | 'blob-corrupt'
  | 'blob-missing'
  | 'snapshot-unreadable'
  | 'snapshot-manifest-missing'
  | 'snapshot-copy-missing'
  | 'snapshot-manifest-damaged'
  | 'snapshot-copy-damaged'
  | 'tree-unreadable'
  | 'tree-cycle'
  | 'cluster-record'
  | 'wal-missing'
  | 'wal-gap'
  | 'wal-history-missing'
  | 'wal-history-unreadable'
  | 'wal-corrupt';

export interface Problem {
  kind: ProblemKind;
  /** Storage object or blob the problem is about. */
  object: string;
  message: string;
  /**
   * Snapshot (and backup) ids it affects: those that cannot be fully restored because of it, or,
   * for a damaged record of one (its manifest or catalog copy, a cluster record), the ones that
   * record is about (they still restore from the other copy, but have lost their redundancy).
   */
  snapshots: string[];
}

export interface CheckReport {
  problems: Problem[];
  warnings: string[];
  stats: { snapshots: number; indexFiles: number; packs: number; blobs: number; trees: number; packsRead: number; keys: number; clusters?: number; walFiles?: number; walRead?: number };
}

export interface CheckOptions {
  readonly readData: boolean;
  /** With readData: read only the packs whose id this accepts (`--read-data-subset`). */
  readonly subset?: ((id: string) => boolean) | undefined;
  /**
   * Snapshots a lock holder announced it adds or removes (docs/design.md §8.2), with who: one of
   * their two objects missing is an unfinished commit (a warning), not damage.
   */
  readonly inFlight?: ReadonlyMap<string, string> | undefined;
  readonly onProgress?: (done: number, total: number, what: string) => void;
}

const MAX_PACK_READ = 1 << 30;

export async function checkRepository(repo: Repository, opts: CheckOptions): Promise<CheckReport> {
  const problems = new Map<string, Problem>();
  const warnings: string[] = [];
  const add = (key: string, kind: ProblemKind, object: string, message: string): void => {
    if (!problems.has(key)) problems.set(key, { kind, object, message, snapshots: [] });
  };

  // 0. Key files and their copies: each must match its name and parse.
  const keys = await repo.listKeyFiles();
  for (const k of keys) {
    for (const [which, object, state] of [['key file', `keys/${k.id}`, k.primary], ['copy', `catalog/keys/${k.id}`, k.copy]] as const) {
      if (state === undefined) continue;
      const other = which === 'key file' ? k.copy : k.primary;
      const flight = opts.inFlight?.get(`key:${k.id}`);
      if (state === 'missing' && flight) {
        warnings.push(`key ${k.id.slice(0, 12)}: ${object} is missing while ${flight} adds or removes it (finished when its stale lock is removed)`);
        continue;
      }
      const rest = other === undefined ? `the other copy is intact (\`holdfast repair snapshots\` rewrites this one)` : 'and so is the other copy: the password(s) of this key no longer open the repository';
      add(`key:${object}`, state === 'missing' ? (which === 'copy' ? 'key-copy-missing' : 'key-missing') : 'key-damaged', object, `key ${k.id.slice(0, 12)}: ${object} ${state === 'missing' ? 'is missing' : state}; ${rest}`);
    }
  }

  // 1. Index files.
  await repo.loadIndex((id, err) => add(`index:${id}`, 'index-unreadable', `index/${id}`, err.message));
  if (repo.index.duplicates > 0) warnings.push(`${repo.index.duplicates} blob(s) are stored in more than one pack (left by an interrupted run; harmless, removed by prune)`);
  for (const c of repo.index.conflicts) {
    add(`pack:${c.pack}`, 'index-conflict', packName(c.pack), `the index lists blob ${c.blob} twice in pack ${c.pack} at different positions (a damaged or forged index file)`);
  }

  // 2. Packs in storage against the index.
  const stored = await repo.listPacks();
  const badPacks = new Set<string>();
  const badBlobs = new Map<string, string>(); // blob id -> problem key
  const indexed = [...repo.index.packs];
  const byPack = new Map<string, Array<[string, BlobLocation]>>();
  for (const [blob, loc] of repo.index.entries()) {
    let list = byPack.get(loc.pack);
    if (!list) byPack.set(loc.pack, (list = []));
    list.push([blob, loc]);
  }
  /**
   * A pack damaged as a whole (wrong size, content not matching its name, header unreadable):
   * with its bytes read (readData), each blob the index places in it is verified where the index
   * places it — as restore reads it — so only the snapshots using a blob that no longer reads are
   * affected; without them every blob in it counts as lost. Returns the blobs lost and indexed.
   */
  const damagedPack = async (id: string, data: Buffer | undefined): Promise<{ lost: number; blobs: number }> => {
    const inPack = byPack.get(id) ?? [];
    if (!data) {
      badPacks.add(id);
      return { lost: inPack.length, blobs: inPack.length };
    }
    let lost = 0;
    for (const [blob, loc] of inPack) {
      const end = loc.offset + loc.length;
      const readable =
        end <= data.length &&
        (await repo.openBlob(loc.type, Buffer.from(blob, 'hex'), data.subarray(loc.offset, end), loc.rawLength, packName(id)).then(
          () => true,
          () => false,
        ));
      if (!readable) {
        badBlobs.set(blob, `pack:${id}`);
        lost++;
      }
    }
    return { lost, blobs: inPack.length };
  };
  const lostText = (n: { lost: number; blobs: number }): string => `; ${n.lost} of the ${n.blobs} indexed blob(s) in it no longer read${n.lost < n.blobs ? ' (the rest still do)' : ''}`;
  let done = 0;
  let packsRead = 0;
  const total = indexed.length;
  for (const [id, info] of indexed) {
    opts.onProgress?.(done++, total, `pack ${id.slice(0, 12)}`);
    const name = packName(id);
    const size = stored.get(id);
    if (size === undefined) {
      add(`pack:${id}`, 'pack-missing', name, `pack ${id} is in the index but missing from storage`);
      badPacks.add(id);
      continue;
    }
    const read = opts.readData && (opts.subset?.(id) ?? true);
    if (read) packsRead++;
    let data: Buffer | undefined;
    try {
      if (read) {
        if (size > MAX_PACK_READ) throw new Error(`pack is ${size} bytes, larger than any pack holdfast writes`);
        data = await repo.backend.get(name);
      }
    } catch (err) {
      add(`pack:${id}`, 'pack-corrupt', name, `pack ${id}: ${describe(err)}`);
      badPacks.add(id);
      continue;
    }
    if (size !== info.size) {
      const n = await damagedPack(id, data);
      add(`pack:${id}`, 'pack-size', name, `pack ${id} has ${size} bytes, the index says ${info.size} (truncated or overwritten)${data ? lostText(n) : ''}`);
      continue;
    }
    try {
      const entries = data ? await checkWholePack(repo, id, data, badBlobs, add) : await repo.readPackHeader(id, size);
      compareWithIndex(id, entries, byPack.get(id) ?? [], add, badPacks);
    } catch (err) {
      const n = await damagedPack(id, data);
      add(`pack:${id}`, 'pack-corrupt', name, `pack ${id}: ${describe(err)}${data ? lostText(n) : ''}`);
    }
  }
  opts.onProgress?.(total, total, 'packs');
  for (const id of stored.keys()) {
    if (!repo.index.packs.has(id)) warnings.push(`pack ${id} is not in any index (left by an interrupted backup, or written by one still running; not used by any snapshot)`);
  }

  // 3. Snapshots: the manifest and its copy (the record that the snapshot exists), then trees.
  const memo = new Map<string, Set<string>>(); // tree id -> problem keys in its subtree
  const onStack = new Set<string>();
  const snapshotIds = await listSnapshotIds(repo);
  const manifests = new Set(await repo.listSnapshotManifests());
  const copies = new Set(await repo.listSnapshotCopies());
  for (const sid of snapshotIds) {
    const flight = opts.inFlight?.get(sid);
    const one = async (which: 'manifest' | 'copy'): Promise<void> => {
      const present = which === 'manifest' ? manifests.has(sid) : copies.has(sid);
      const object = which === 'manifest' ? `snapshots/${sid}` : `catalog/${sid}`;
      const other = which === 'manifest' ? 'its copy' : 'its manifest';
      if (!present) {
        if (flight) warnings.push(`snapshot ${sid.slice(0, 12)}: ${object} is missing while ${flight} commits it (an interrupted or running operation; finished when its stale lock is removed)`);
        else add(`snapshot-${which}:${sid}`, which === 'manifest' ? 'snapshot-manifest-missing' : 'snapshot-copy-missing', object, `snapshot ${sid.slice(0, 12)}: ${object} is missing (${other} is the only record left; \`holdfast repair snapshots\` rewrites it)`);
        return;
      }
      try {
        await (which === 'manifest' ? repo.loadSnapshotManifest(sid) : repo.loadSnapshotCopy(sid));
      } catch (err) {
        add(`snapshot-${which}:${sid}`, which === 'manifest' ? 'snapshot-manifest-damaged' : 'snapshot-copy-damaged', object, `snapshot ${sid.slice(0, 12)}: ${describe(err)}`);
      }
    };
    await one('manifest');
    await one('copy');
    for (const which of ['manifest', 'copy']) problems.get(`snapshot-${which}:${sid}`)?.snapshots.push(sid);
  }
  let trees = 0;
  for (const sid of snapshotIds) {
    let root: string;
    try {
      root = (await loadSnapshot(repo, sid)).tree;
    } catch (err) {
      add(`snapshot:${sid}`, 'snapshot-unreadable', `snapshots/${sid}`, describe(err));
      problems.get(`snapshot:${sid}`)!.snapshots.push(sid);
      continue;
    }
    const keys = await analyseTree(root);
    for (const k of keys) problems.get(k)?.snapshots.push(sid);
  }

  async function treeProblems(id: string): Promise<{ keys: Set<string>; children: string[] }> {
    const keys = new Set<string>();
    const children: string[] = [];
    const loc = repo.index.get(id, 'tree');
    if (!loc) {
      add(`blob:${id}`, 'blob-missing', id, `tree blob ${id} is not in the index`);
      keys.add(`blob:${id}`);
      return { keys, children };
    }
    if (badPacks.has(loc.pack)) keys.add(`pack:${loc.pack}`);
    if (badBlobs.has(id)) keys.add(badBlobs.get(id)!);
    if (keys.size > 0) return { keys, children };
    try {
      const tree = decodeTree(await repo.loadBlob('tree', id), id);
      trees++;
      for (const n of tree.nodes) {
        if (n.type === 'dir' && n.subtree) children.push(n.subtree);
        for (const blob of n.content ?? []) {
          const bl = repo.index.get(blob, 'data');
          if (!bl) {
            add(`blob:${blob}`, 'blob-missing', blob, `data blob ${blob} (in ${JSON.stringify(n.name)}) is not in the index`);
            keys.add(`blob:${blob}`);
          } else if (badPacks.has(bl.pack)) keys.add(`pack:${bl.pack}`);
          else if (badBlobs.has(blob)) keys.add(badBlobs.get(blob)!);
        }
      }
    } catch (err) {
      add(`tree:${id}`, 'tree-unreadable', id, `tree ${id}: ${describe(err)}`);
      keys.add(`tree:${id}`);
    }
    return { keys, children };
  }

  async function analyseTree(root: string): Promise<Set<string>> {
    const stack: Array<{ id: string; keys: Set<string>; children: string[]; i: number }> = [];
    const enter = async (id: string): Promise<Set<string> | undefined> => {
      const known = memo.get(id);
      if (known) return known;
      if (onStack.has(id)) {
        add(`cycle:${id}`, 'tree-cycle', id, `tree ${id} contains itself (cyclic reference)`);
        return new Set([`cycle:${id}`]);
      }
      const { keys, children } = await treeProblems(id);
      onStack.add(id);
      stack.push({ id, keys, children, i: 0 });
      return undefined;
    };
    const first = await enter(root);
    if (first) return first;
    let result = new Set<string>();
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i < top.children.length) {
        const child = top.children[top.i++]!;
        const r = await enter(child);
        if (r) for (const k of r) top.keys.add(k);
        continue;
      }
      stack.pop();
      onStack.delete(top.id);
      memo.set(top.id, top.keys);
      const parent = stack[stack.length - 1];
      if (parent) for (const k of top.keys) parent.keys.add(k);
      else result = top.keys;
    }
    return result;
  }

  return {
    problems: [...problems.values()],
    warnings,
    stats: { snapshots: snapshotIds.length, indexFiles: repo.indexFiles.length, packs: stored.size, blobs: repo.index.blobCount, trees, packsRead, keys: keys.length },
  };
}

/** A pack read whole: it must hash to its name, its header parse, and every blob in it read. */
async function checkWholePack(
  repo: Repository,
  id: string,
  data: Buffer,
  badBlobs: Map<string, string>,
  add: (key: string, kind: ProblemKind, object: string, message: string) => void,
): Promise<PackEntry[]> {
  const name = packName(id);
  if (sha256Hex(data) !== id) throw new Error('content does not match its name (SHA-256 mismatch): the pack is damaged');
  const entries = parsePack(repo.packKey(), data);
  for (const e of entries) {
    const hex = e.id.toString('hex');
    try {
      await repo.openBlob(e.type, e.id, data.subarray(e.offset, e.offset + e.length), e.rawLength, name);
    } catch (err) {
      add(`blobdata:${hex}`, 'blob-corrupt', hex, `blob ${hex} in pack ${id}: ${describe(err)}`);
      badBlobs.set(hex, `blobdata:${hex}`);
    }
  }
  return entries;
}

function compareWithIndex(
  id: string,
  entries: readonly PackEntry[],
  indexed: ReadonlyArray<[string, BlobLocation]>,
  add: (key: string, kind: ProblemKind, object: string, message: string) => void,
  badPacks: Set<string>,
): void {
  const inPack = new Map(entries.map((e) => [e.id.toString('hex'), e]));
  for (const [blob, loc] of indexed) {
    const e = inPack.get(blob);
    if (!e || e.offset !== loc.offset || e.length !== loc.length || e.type !== loc.type) {
      add(`pack:${id}`, 'pack-corrupt', packName(id), `pack ${id}: its header disagrees with the index about blob ${blob}`);
      badPacks.add(id);
      return;
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof HoldfastError) return err.message;
  if (isNotFound(err)) return 'missing from storage';
  return err instanceof Error ? err.message : String(err);
}
