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
/** Timestamps in nanoseconds: a signed 64-bit seconds value times 10^9 fits in 29 digits. */
const NS = /^-?[0-9]{1,29}$/;
/** Inode numbers: unsigned 64-bit, as decimal. */
const INODE = /^[0-9]{1,20}$/;
/** A lone UTF-16 surrogate: cannot come from readdir, and would collide with U+FFFD on disk. */
const LONE_SURROGATE = /\p{Cs}/u;

/** True when `name` is safe to join onto a directory path. */
export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0') && !LONE_SURROGATE.test(name);
}

/**
 * A value from a damaged tree, for a message: strings quoted (and cut), other values by type.
 * Never JSON.stringify a decoded value as is: JSON.parse accepts nesting a million levels deep,
 * and stringifying that overflows the stack.
 */
function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}…` : v);
  if (typeof v === 'object' && v !== null) return Array.isArray(v) ? 'an array' : 'an object';
  return String(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parse and validate a tree blob. Every field a reader uses is checked for its type and range
 * (unknown fields are dropped), so code walking or restoring the tree never meets a value that
 * makes it throw: INTEGRITY for a malformed tree, UNSAFE_PATH for a name that could leave its
 * directory or a name given twice.
 */
export function decodeTree(data: Buffer, id: string): Tree {
  let tree: unknown;
  try {
    tree = JSON.parse(data.toString('utf8'));
  } catch {
    throw new HoldfastError('INTEGRITY', `tree ${id} is not valid JSON`, { blob: id });
  }
  if (typeof tree !== 'object' || tree === null || Array.isArray(tree) || !Array.isArray((tree as Partial<Tree>).nodes)) throw new HoldfastError('INTEGRITY', `tree ${id} has no node list`, { blob: id });
  const nodes = (tree as { nodes: unknown[] }).nodes;
  const seen = new Set<string>();
  for (const [i, n] of nodes.entries()) {
    if (typeof n !== 'object' || n === null || Array.isArray(n)) throw new HoldfastError('INTEGRITY', `tree ${id}: node ${i} is not an object`, { blob: id });
    const node = n as Partial<Record<keyof TreeNode, unknown>>;
    if (!isSafeName(node.name)) {
      throw new HoldfastError('UNSAFE_PATH', `tree ${id} contains the unsafe name ${show(node.name)} (it would escape its directory)`, { blob: id, name: typeof node.name === 'string' ? node.name : show(node.name) });
    }
    const name = node.name;
    if (seen.has(name)) throw new HoldfastError('UNSAFE_PATH', `tree ${id} contains ${show(name)} twice`, { blob: id, name });
    seen.add(name);
    const bad = (what: string): never => {
      throw new HoldfastError('INTEGRITY', `tree ${id}: node ${show(name)} has ${what}`, { blob: id, name });
    };
    if (typeof node.type !== 'string' || !NODE_TYPES.has(node.type)) bad(`unknown type ${show(node.type)}`);
    if (!isCount(node.mode) || node.mode > 0o7777) bad('an invalid mode');
    for (const f of ['mtime', 'atime', 'ctime'] as const) {
      const t = node[f];
      if (typeof t !== 'string' || !NS.test(t)) bad(`an invalid ${f}`);
    }
    if (!isCount(node.uid) || !isCount(node.gid)) bad('an invalid owner');
    if (typeof node.inode !== 'string' || !INODE.test(node.inode)) bad('an invalid inode');
    // Optional fields: checked whenever present, required by the types that need them.
    const content = node.content;
    if (content !== undefined && !(Array.isArray(content) && content.every((c) => typeof c === 'string' && HEX64.test(c)))) bad('an invalid content list');
    if (node.size !== undefined && !isCount(node.size)) bad('an invalid size');
    if (node.subtree !== undefined && !(typeof node.subtree === 'string' && HEX64.test(node.subtree))) bad('an invalid subtree id');
    if (node.target !== undefined && !(typeof node.target === 'string' && !node.target.includes('\0'))) bad('an invalid link target');
    if (node.rdev !== undefined && !isCount(node.rdev)) bad('an invalid device number');
    if (node.type === 'file' && (content === undefined || node.size === undefined)) bad('no content list or size');
    if (node.type === 'dir' && node.subtree === undefined) bad('no subtree id');
    if (node.type === 'symlink' && node.target === undefined) bad('no link target');
  }
  // Only the known fields, so nothing unvalidated (say, an unknown field nested a million levels
  // deep) travels on to code that prints or re-encodes nodes.
  return { nodes: (nodes as TreeNode[]).map(knownFields) };
}

function knownFields(n: TreeNode): TreeNode {
  const out: TreeNode = { name: n.name, type: n.type, mode: n.mode, mtime: n.mtime, atime: n.atime, ctime: n.ctime, uid: n.uid, gid: n.gid, inode: n.inode };
  if (n.size !== undefined) out.size = n.size;
  if (n.content !== undefined) out.content = n.content;
  if (n.subtree !== undefined) out.subtree = n.subtree;
  if (n.target !== undefined) out.target = n.target;
  if (n.rdev !== undefined) out.rdev = n.rdev;
  return out;
}

/** Nanosecond string to the seconds value fs.utimes takes (microsecond precision survives). */
export function nsToSeconds(ns: string): number {
  const v = BigInt(ns);
  return Number(v / 1000n) / 1e6;
}
