/**
 * Iterative depth-first walk over a snapshot's trees. The stack holds one level of nodes per
 * directory depth, so memory grows with depth and directory width, never with the tree's size.
 * Trees are verified and validated as they load (names cannot escape; see tree.ts).
 */
import { HoldfastError } from '../errors/catalogue.js';
import type { Repository } from '../repository/repository.js';
import { type TreeNode, decodeTree } from './tree.js';

export interface WalkEntry {
  /** Absolute path inside the snapshot, '/'-separated, e.g. `/home/ann/notes.txt`. */
  readonly path: string;
  readonly node: TreeNode;
}

export async function loadTree(repo: Repository, id: string): Promise<TreeNode[]> {
  return decodeTree(await repo.loadBlob('tree', id), id).nodes;
}

/**
 * Yield every node below `rootTree` in pre-order. `descend(entry)` may return false to skip a
 * directory's contents (include filters, unchanged subtrees).
 */
export async function* walkTree(repo: Repository, rootTree: string, descend: (e: WalkEntry) => boolean = () => true): AsyncGenerator<WalkEntry> {
  const stack: Array<{ id: string; dir: string; nodes: TreeNode[]; i: number }> = [{ id: rootTree, dir: '', nodes: await loadTree(repo, rootTree), i: 0 }];
  // Tree ids are content hashes, so a tree cannot contain itself short of a forged repository
  // (or a SHA-256 collision): refuse one rather than walk forever.
  const onPath = new Set<string>([rootTree]);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.i >= top.nodes.length) {
      stack.pop();
      onPath.delete(top.id);
      continue;
    }
    const node = top.nodes[top.i++]!;
    const entry: WalkEntry = { path: `${top.dir}/${node.name}`, node };
    yield entry;
    if (node.type === 'dir' && node.subtree && descend(entry)) {
      if (onPath.has(node.subtree)) throw new HoldfastError('INTEGRITY', `tree ${node.subtree} contains itself (at ${entry.path}): the repository is damaged or forged`, { object: node.subtree });
      onPath.add(node.subtree);
      stack.push({ id: node.subtree, dir: entry.path, nodes: await loadTree(repo, node.subtree), i: 0 });
    }
  }
}

/** Include filter for restore/ls: which snapshot paths are selected. */
export class PathSelector {
  private readonly includes: string[];

  constructor(includes: readonly string[]) {
    this.includes = includes.map((p) => '/' + p.split('/').filter((s) => s !== '' && s !== '.').join('/')).map((p) => (p === '/' ? '' : p));
  }

  get all(): boolean {
    return this.includes.length === 0 || this.includes.includes('');
  }

  /** 'in': selected; 'ancestor': leads to a selected path; 'out': neither. */
  classify(p: string): 'in' | 'ancestor' | 'out' {
    if (this.all) return 'in';
    let ancestor = false;
    for (const inc of this.includes) {
      if (p === inc || p.startsWith(inc + '/')) return 'in';
      if (inc.startsWith(p + '/')) ancestor = true;
    }
    return ancestor ? 'ancestor' : 'out';
  }
}
