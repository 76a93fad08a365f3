/**
 * Tree blobs: one per directory, JSON `{ "nodes": [...] }` sorted by name, stored as blobs of type
 * `tree` (so identical directories are stored once). A snapshot names its root tree.
 *
 * Every tree read from the repository is validated before use: names must be single path
 * components (no '/', no NUL, not '.', '..' or empty) and unique within the tree, types and
 * fields must be well formed. A tree that fails is reported as UNSAFE_PATH (names) or INTEGRITY.
 */
import { HoldfastError } from '../errors/catalogue.js';

export type NodeType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';
const NODE_TYPES = new Set<string>(['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev']);

export interface TreeNode {
  name: string;
  type: NodeType;
  /** Permission bits including setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  /** Nanoseconds since the epoch, as a decimal string. */
  mtime: string;
  atime: string;
  ctime: string;
  uid: number;
  gid: number;
  inode: string;
  size?: number;
  /** File content: ids of data blobs in order. */
  content?: string[];
  /** Directory: id of its tree blob. */
  subtree?: string;
  /** Symlink target, exactly as stored by readlink. */
  target?: string;
  /** Device number for device nodes. */
  rdev?: number;
}

export interface Tree {
  nodes: TreeNode[];
}

export function encodeTree(tree: Tree): Buffer {
  return Buffer.from(JSON.stringify(tree));
}

const HEX64 = /^[0-9a-f]{64}$/;

/** True when `name` is safe to join onto a directory path. */
export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

export function decodeTree(data: Buffer, id: string): Tree {
  let tree: Tree;
  try {
    tree = JSON.parse(data.toString('utf8')) as Tree;
  } catch {
    throw new HoldfastError('INTEGRITY', `tree ${id} is not valid JSON`, { blob: id });
  }
  if (typeof tree !== 'object' || tree === null || !Array.isArray(tree.nodes)) throw new HoldfastError('INTEGRITY', `tree ${id} has no node list`, { blob: id });
  const seen = new Set<string>();
  for (const n of tree.nodes) {
    if (typeof n !== 'object' || n === null) throw new HoldfastError('INTEGRITY', `tree ${id} has a malformed node`, { blob: id });
    if (!isSafeName(n.name)) {
      throw new HoldfastError('UNSAFE_PATH', `tree ${id} contains the unsafe name ${JSON.stringify(n.name)} (it would escape its directory)`, { blob: id, name: n.name });
    }
    if (seen.has(n.name)) throw new HoldfastError('UNSAFE_PATH', `tree ${id} contains ${JSON.stringify(n.name)} twice`, { blob: id, name: n.name });
    seen.add(n.name);
    if (!NODE_TYPES.has(n.type)) throw new HoldfastError('INTEGRITY', `tree ${id}: node ${JSON.stringify(n.name)} has unknown type ${JSON.stringify(n.type)}`, { blob: id });
    const bad = (what: string): never => {
      throw new HoldfastError('INTEGRITY', `tree ${id}: node ${JSON.stringify(n.name)} has ${what}`, { blob: id, name: n.name });
    };
    if (!Number.isInteger(n.mode) || n.mode < 0 || n.mode > 0o7777) bad('an invalid mode');
    if (n.type === 'file') {
      if (!Array.isArray(n.content) || !n.content.every((c) => typeof c === 'string' && HEX64.test(c))) bad('an invalid content list');
      if (!Number.isSafeInteger(n.size) || n.size! < 0) bad('an invalid size');
    }
    if (n.type === 'dir' && !(typeof n.subtree === 'string' && HEX64.test(n.subtree))) bad('an invalid subtree id');
    if (n.type === 'symlink' && typeof n.target !== 'string') bad('no link target');
  }
  return tree;
}

/** Nanosecond string to the seconds value fs.utimes takes (microsecond precision survives). */
export function nsToSeconds(ns: string): number {
  const v = BigInt(ns);
  return Number(v / 1000n) / 1e6;
}
