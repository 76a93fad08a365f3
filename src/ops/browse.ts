/** Read-only views of a repository: snapshots, ls, diff. */
import { type SnapshotFilter, type SnapshotWithId, findSnapshot, listSnapshots, matchesFilter } from '../repository/snapshot.js';
import type { Repository } from '../repository/repository.js';
import { PathSelector, type WalkEntry, loadTree, walkTree } from '../files/walk.js';
import type { TreeNode } from '../files/tree.js';
import type { RepoRef } from './context.js';
import { openRepository } from './repo.js';

export async function snapshots(ref: RepoRef, filter: SnapshotFilter): Promise<SnapshotWithId[]> {
  const repo = await openRepository(ref, false);
  try {
    return (await listSnapshots(repo)).filter((s) => matchesFilter(s, filter));
  } finally {
    await repo.close();
  }
}

/** Walk a snapshot (or the part below `dir`), calling `each` for every entry in pre-order. */
export async function ls(ref: RepoRef, snapshot: string, dir: string | undefined, each: (e: WalkEntry) => void): Promise<SnapshotWithId> {
  const repo = await openRepository(ref);
  try {
    const sn = await findSnapshot(repo, snapshot);
    const select = new PathSelector(dir ? [dir] : []);
    for await (const e of walkTree(repo, sn.tree, (x) => select.classify(x.path) !== 'out')) {
      if (select.classify(e.path) === 'in') each(e);
    }
    return sn;
  } finally {
    await repo.close();
  }
}

export type ChangeKind = '+' | '-' | 'M' | 'T' | 'U';

export interface Change {
  kind: ChangeKind;
  path: string;
  type: string;
}

/**
 * Compare two snapshots: + added, - removed, M content changed, T type changed, U metadata only.
 * Identical subtrees (same tree id) are skipped without loading them.
 */
export async function diff(ref: RepoRef, a: string, b: string, each: (c: Change) => void): Promise<{ from: SnapshotWithId; to: SnapshotWithId }> {
  const repo = await openRepository(ref);
  try {
    const from = await findSnapshot(repo, a);
    const to = await findSnapshot(repo, b);
    const stack: Array<{ dir: string; left: string | undefined; right: string | undefined }> = [{ dir: '', left: from.tree, right: to.tree }];
    while (stack.length > 0) {
      const { dir, left, right } = stack.pop()!;
      if (left === right) continue;
      const l = left ? await loadTree(repo, left) : [];
      const r = right ? await loadTree(repo, right) : [];
      const lm = new Map(l.map((n) => [n.name, n]));
      const rm = new Map(r.map((n) => [n.name, n]));
      const names = [...new Set([...lm.keys(), ...rm.keys()])].sort();
      const subdirs: typeof stack = [];
      for (const name of names) {
        const p = `${dir}/${name}`;
        const x = lm.get(name);
        const y = rm.get(name);
        if (!x) {
          each({ kind: '+', path: p, type: y!.type });
          if (y!.type === 'dir') await listAll(repo, y!.subtree!, p, '+', each);
        } else if (!y) {
          each({ kind: '-', path: p, type: x.type });
          if (x.type === 'dir') await listAll(repo, x.subtree!, p, '-', each);
        } else if (x.type !== y.type) {
          each({ kind: 'T', path: p, type: y.type });
        } else if (x.type === 'dir') {
          if (metaDiffers(x, y)) each({ kind: 'U', path: p, type: 'dir' });
          if (x.subtree !== y.subtree) subdirs.push({ dir: p, left: x.subtree, right: y.subtree });
        } else if (x.type === 'file' ? !sameContent(x, y) : x.target !== y.target || x.rdev !== y.rdev) {
          each({ kind: 'M', path: p, type: y.type });
        } else if (metaDiffers(x, y)) {
          each({ kind: 'U', path: p, type: y.type });
        }
      }
      stack.push(...subdirs.reverse());
    }
    return { from, to };
  } finally {
    await repo.close();
  }
}

function sameContent(x: TreeNode, y: TreeNode): boolean {
  const a = x.content ?? [];
  const b = y.content ?? [];
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function metaDiffers(x: TreeNode, y: TreeNode): boolean {
  return x.mode !== y.mode || x.mtime !== y.mtime || x.uid !== y.uid || x.gid !== y.gid;
}

async function listAll(repo: Repository, tree: string, base: string, kind: ChangeKind, each: (c: Change) => void): Promise<void> {
  for await (const e of walkTree(repo, tree)) each({ kind, path: base + e.path, type: e.node.type });
}
