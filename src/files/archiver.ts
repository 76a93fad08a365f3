/**
 * Archiver: turns file trees into blobs and tree blobs, reusing the parent snapshot's content for
 * files whose size, mtime, ctime and inode are unchanged.
 *
 * Memory is bounded: at most `fileSlots` files are open at once, each with at most `window`
 * chunks in flight, and the repository bounds packs in memory. Directories are walked depth
 * first; a directory's tree blob is saved when all its entries are done.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { BigIntStats } from 'node:fs';
import { sha256 } from '../repository/crypto.js';
import type { Repository } from '../repository/repository.js';
import { Semaphore } from '../util/semaphore.js';
import { Chunker } from './chunker.js';
import type { ReaderPool } from './reader-pool.js';
import { type CorruptPage, type FileMode, cutterFor, inspectChunk } from './file-mode.js';
import { chunkStream } from './chunker.js';
import type { Excluder } from './exclude.js';
import { type NodeType, type Tree, type TreeNode, decodeTree, encodeTree } from './tree.js';
import { systemCode } from '../errors/catalogue.js';

export interface ArchiveProgress {
  filesDone: number;
  dirsDone: number;
  bytesDone: number;
  filesNew: number;
  filesChanged: number;
  filesUnchanged: number;
  blobsAdded: number;
  bytesAdded: number;
  errors: number;
  current: string;
}

export interface ArchiveOptions {
  readonly excluder: Excluder;
  /** Root tree of the parent snapshot, for change detection. */
  readonly parentTree?: string | undefined;
  readonly onError: (path: string, err: unknown) => void;
  readonly progress: ArchiveProgress;
  readonly signal?: AbortSignal | undefined;
  readonly fileSlots?: number;
  /** Worker threads that read, chunk and seal files; without it files are read in this thread. */
  readonly pool?: ReaderPool | undefined;
  /** Extra rule: true skips the entry (checked with --exclude patterns; PostgreSQL exclusions). */
  readonly skip?: ((absPath: string, name: string) => boolean) | undefined;
  /**
   * Files whose mtime (ns) is at or after this are read again even when the parent snapshot says
   * they are unchanged: they may have been written during the parent's backup (PostgreSQL).
   */
  readonly rereadModifiedSince?: bigint | undefined;
  /** How to read a file (fixed chunks, page verification); default: content-defined chunks. */
  readonly fileMode?: ((absPath: string) => FileMode | undefined) | undefined;
  /** Pages that failed verification in a file read with FileMode.verify. */
  readonly onCorrupt?: ((absPath: string, pages: CorruptPage[]) => void) | undefined;
}

export function newArchiveProgress(): ArchiveProgress {
  return { filesDone: 0, dirsDone: 0, bytesDone: 0, filesNew: 0, filesChanged: 0, filesUnchanged: 0, blobsAdded: 0, bytesAdded: 0, errors: 0, current: '' };
}

interface VirtualDir {
  children: Map<string, VirtualDir | string>;
}

export class Archiver {
  private readonly chunker: Chunker;
  private readonly slots: Semaphore;
  /** Files of 128 KiB or more read at once; each holds one reusable window of max chunk size + 1 MiB. */
  private readonly bigSlots = new Semaphore(2);
  private readonly windows: Buffer[] = [];
  private readonly p: ArchiveProgress;

  constructor(
    private readonly repo: Repository,
    private readonly opts: ArchiveOptions,
  ) {
    this.chunker = new Chunker(repo.config.chunker);
    this.slots = new Semaphore(opts.fileSlots ?? (opts.pool ? 32 : 4));
    this.p = opts.progress;
  }

  /** Back up absolute `paths`; returns the root tree id. Callers flush the repository afterwards. */
  async archive(paths: readonly string[]): Promise<string> {
    if (paths.includes('/')) return this.saveDir('/', this.opts.parentTree);
    const root: VirtualDir = { children: new Map() };
    for (const p of paths) {
      const parts = p.split('/').filter((s) => s !== '');
      let dir = root;
      for (const [i, part] of parts.entries()) {
        const last = i === parts.length - 1;
        const cur = dir.children.get(part);
        if (last) {
          dir.children.set(part, p);
        } else if (typeof cur === 'string') {
          break; // an ancestor is already backed up whole
        } else {
          const next = cur ?? { children: new Map() };
          dir.children.set(part, next);
          dir = next;
        }
      }
    }
    return this.saveVirtual(root, '/', this.opts.parentTree);
  }

  private async loadParent(id: string | undefined): Promise<Map<string, TreeNode> | undefined> {
    if (!id || !this.repo.index.has(id, 'tree')) return undefined;
    try {
      const tree = decodeTree(await this.repo.loadBlob('tree', id), id);
      return new Map(tree.nodes.map((n) => [n.name, n]));
    } catch {
      return undefined; // a damaged parent only costs re-reading
    }
  }

  private async saveVirtual(dir: VirtualDir, absPath: string, parentId: string | undefined): Promise<string> {
    const parent = await this.loadParent(parentId);
    const nodes: TreeNode[] = [];
    for (const name of [...dir.children.keys()].sort()) {
      const child = dir.children.get(name)!;
      const childPath = path.posix.join(absPath, name);
      const parentNode = parent?.get(name);
      if (typeof child === 'string') {
        const started = await this.saveEntry(child, name, parentNode);
        const node = started && (await started.done);
        if (node && node !== SKIP) nodes.push(node);
      } else {
        let st: BigIntStats;
        try {
          st = await fsp.lstat(childPath, { bigint: true });
        } catch (err) {
          this.fail(childPath, err);
          continue;
        }
        const node = statNode(name, st, 'dir');
        node.subtree = await this.saveVirtual(child, childPath, parentNode?.type === 'dir' ? parentNode.subtree : undefined);
        nodes.push(node);
      }
    }
    return this.saveTree({ nodes });
  }

  private async saveTree(tree: Tree): Promise<string> {
    tree.nodes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const { id, added } = await this.repo.saveBlob('tree', encodeTree(tree));
    if (added) this.p.blobsAdded++;
    return id.toString('hex');
  }

  private fail(p: string, err: unknown): void {
    this.p.errors++;
    this.opts.onError(p, err);
  }

  /**
   * Start saving one entry. Files resolve to `{ done }` as soon as a read slot is taken, so several
   * files proceed at once (the wrapper object keeps `await` from flattening the inner promise);
   * directories resolve when their whole subtree is saved.
   */
  private async saveEntry(absPath: string, name: string, parentNode: TreeNode | undefined, stat?: BigIntStats | Error): Promise<{ done: Promise<TreeNode> } | undefined> {
    this.opts.signal?.throwIfAborted();
    let st: BigIntStats;
    try {
      const got = stat ?? (await fsp.lstat(absPath, { bigint: true }));
      if (got instanceof Error) throw got;
      st = got;
    } catch (err) {
      this.fail(absPath, err);
      return undefined;
    }
    const type = nodeType(st);
    const node = statNode(name, st, type);
    switch (type) {
      case 'dir': {
        node.subtree = await this.saveDir(absPath, parentNode?.type === 'dir' ? parentNode.subtree : undefined);
        this.p.dirsDone++;
        return { done: Promise.resolve(node) };
      }
      case 'symlink':
        try {
          node.target = await fsp.readlink(absPath);
        } catch (err) {
          this.fail(absPath, err);
          return undefined;
        }
        return { done: Promise.resolve(node) };
      case 'file': {
        if (this.unchanged(node, parentNode)) return { done: Promise.resolve(node) };
        await this.slots.acquire();
        const done = this.saveFile(absPath, node, parentNode).finally(() => this.slots.release());
        // Errors are reported through onError; the node is dropped from the tree.
        const wrapped = done.then((n) => n ?? SKIP);
        wrapped.catch(() => undefined); // observed later by Promise.all; don't crash as "unhandled" meanwhile
        return { done: wrapped };
      }
      default:
        if (st.rdev) node.rdev = Number(st.rdev);
        return { done: Promise.resolve(node) };
    }
  }

  private async saveDir(absPath: string, parentId: string | undefined): Promise<string> {
    const parent = await this.loadParent(parentId);
    let names: string[];
    try {
      names = (await fsp.readdir(absPath)).sort();
    } catch (err) {
      this.fail(absPath, err);
      names = [];
    }
    const pending: Array<Promise<TreeNode>> = [];
    const base = absPath === '/' ? '' : absPath;
    const included = names.filter((name) => !this.opts.excluder.excluded(`${base}/${name}`, name) && !this.opts.skip?.(`${base}/${name}`, name));
    // Stat a batch of entries at once: one thread-pool round trip per entry in series would
    // dominate backups of many small or unchanged files.
    for (let i = 0; i < included.length; i += STAT_BATCH) {
      const batch = included.slice(i, i + STAT_BATCH);
      const stats = await Promise.all(batch.map((name) => fsp.lstat(`${base}/${name}`, { bigint: true }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))))));
      for (const [j, name] of batch.entries()) {
        const started = await this.saveEntry(`${base}/${name}`, name, parent?.get(name), stats[j]!);
        if (started) pending.push(started.done);
      }
    }
    const nodes = (await Promise.all(pending)).filter((n) => n !== SKIP);
    return this.saveTree({ nodes });
  }

  private async saveFileInPool(pool: ReaderPool, absPath: string, node: TreeNode, parentNode: TreeNode | undefined): Promise<TreeNode | undefined> {
    try {
      const mode = this.opts.fileMode?.(absPath);
      const r = await pool.read(absPath, node.size ?? 0, {
        onBytes: (n) => {
          this.p.bytesDone += n;
        },
        onBlobAdded: (n) => {
          this.p.blobsAdded++;
          this.p.bytesAdded += n;
        },
      }, mode);
      node.content = r.content;
      node.size = r.size;
      if (r.corrupt?.length) this.opts.onCorrupt?.(absPath, r.corrupt);
    } catch (err) {
      this.opts.signal?.throwIfAborted();
      if (isSourceError(err)) {
        this.fail(absPath, err);
        return undefined;
      }
      throw err;
    }
    if (parentNode?.type === 'file') this.p.filesChanged++;
    else this.p.filesNew++;
    this.p.filesDone++;
    return node;
  }

  /** Reuse the parent snapshot's content when size, mtime, ctime and inode are unchanged. */
  private unchanged(node: TreeNode, parentNode: TreeNode | undefined): boolean {
    if (
      parentNode?.type !== 'file' ||
      (this.opts.rereadModifiedSince !== undefined && BigInt(node.mtime) >= this.opts.rereadModifiedSince) ||
      parentNode.size !== node.size ||
      parentNode.mtime !== node.mtime ||
      parentNode.ctime !== node.ctime ||
      parentNode.inode !== node.inode ||
      !parentNode.content?.every((id) => this.repo.knows('data', id))
    ) {
      return false;
    }
    node.content = parentNode.content;
    this.p.filesUnchanged++;
    this.p.filesDone++;
    this.p.bytesDone += node.size ?? 0;
    return true;
  }

  private async saveFile(absPath: string, node: TreeNode, parentNode: TreeNode | undefined): Promise<TreeNode | undefined> {
    this.p.current = absPath;
    if (this.opts.pool) return this.saveFileInPool(this.opts.pool, absPath, node, parentNode);
    // Files above the initial mmap threshold share pooled windows: allocating and freeing one per
    // file makes glibc raise that threshold and fragment the heap.
    const mode = this.opts.fileMode?.(absPath);
    const cutter = cutterFor(this.chunker, mode);
    const big = (node.size ?? 0) >= 128 << 10 && !mode?.fixedChunk;
    if (big) await this.bigSlots.acquire();
    let window: Buffer | undefined;
    let fh: fsp.FileHandle | undefined;
    const corrupt: CorruptPage[] = [];
    try {
      fh = await fsp.open(absPath, 'r');
      window = big ? (this.windows.pop() ?? Buffer.allocUnsafe(this.chunker.windowSize(Infinity))) : Buffer.allocUnsafe(cutter.windowSize(node.size ?? 0));
      const content: string[] = [];
      const inflight: Array<Promise<unknown>> = [];
      let size = 0;
      // Chunks are views into the window: everything in flight must be stored before it refills.
      const handle = fh;
      const read = async (buf: Buffer, off: number, len: number, at: number): Promise<number> => (await handle.read(buf, off, len, at)).bytesRead;
      for await (const chunk of chunkStream(cutter, read, window, () => Promise.all(inflight.splice(0)))) {
        this.opts.signal?.throwIfAborted();
        const id = sha256(chunk);
        content.push(id.toString('hex'));
        inspectChunk(mode, chunk, size, corrupt);
        size += chunk.length;
        this.p.bytesDone += chunk.length;
        if (inflight.length >= 3) await inflight.shift();
        const saved = this.repo.saveBlob('data', chunk, id).then(({ added }) => {
          if (added) {
            this.p.blobsAdded++;
            this.p.bytesAdded += chunk.length;
          }
        });
        saved.catch(() => undefined); // awaited below; don't crash as "unhandled" meanwhile
        inflight.push(saved);
      }
      await Promise.all(inflight);
      node.content = content;
      node.size = size;
      if (corrupt.length) this.opts.onCorrupt?.(absPath, corrupt);
      if (parentNode?.type === 'file') this.p.filesChanged++;
      else this.p.filesNew++;
      this.p.filesDone++;
      return node;
    } catch (err) {
      if (this.opts.signal?.aborted) throw err;
      if (isSourceError(err)) {
        this.fail(absPath, err);
        return undefined;
      }
      throw err;
    } finally {
      await fh?.close();
      if (big) {
        if (window) this.windows.push(window);
        this.bigSlots.release();
      }
    }
  }
}

const SKIP = Symbol('skip') as unknown as TreeNode;
const STAT_BATCH = 64;

function isSourceError(err: unknown): boolean {
  const code = systemCode(err);
  return code === 'EACCES' || code === 'EPERM' || code === 'EIO' || code === 'ENOENT' || code === 'EISDIR' || code === 'ESTALE';
}

function nodeType(st: BigIntStats): NodeType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'chardev';
  return 'blockdev';
}

function statNode(name: string, st: BigIntStats, type: NodeType): TreeNode {
  const node: TreeNode = {
    name,
    type,
    mode: Number(st.mode & 0o7777n),
    mtime: st.mtimeNs.toString(),
    atime: st.atimeNs.toString(),
    ctime: st.ctimeNs.toString(),
    uid: Number(st.uid),
    gid: Number(st.gid),
    inode: st.ino.toString(),
  };
  if (type === 'file') node.size = Number(st.size);
  return node;
}
