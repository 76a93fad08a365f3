/**
 * Power-loss simulation under the local storage driver: a FUSE filesystem (src/testing/powerloss.py,
 * built on faultfs.py) that knows what a disk would still hold if the power went out now, and a
 * "reboot" that materialises exactly that into a plain directory. Used by *.test.ts only.
 *
 * The durability model (conservative POSIX; details in powerloss.py):
 * - At mount everything in the backing directory is durable.
 * - A file's durable content is what it held at its last fsync/fdatasync (a file created since
 *   the mount: empty); later writes and truncates are not durable. Per inode, so it follows
 *   renames and hard links.
 * - A directory's durable listing is what it held at its last fsync of the directory (a directory
 *   created since the mount: empty). Creating, linking, unlinking, renaming (in both directories)
 *   is durable only then; fsync of a file never persists its name.
 * - Metadata (modes, owners, times) is not modelled: the image has the current modes and owners.
 *
 * A crash point is chosen by the test: crashAfter(n) lets the first n mutating operations (write,
 * truncate, create, mknod, mkdir, symlink, link, unlink, rmdir, rename, fsync, fsyncdir, open with
 * O_TRUNC; counted from the mount) through and makes the next one the crash; crash() crashes now.
 * At the crash the filesystem freezes: that operation and every later one fail with EIO (kill
 * the writer then: SIGKILL, as a power loss would). Mode `discard` loses everything not durable;
 * `tear` also applies the last write of a surviving file partially, cut at a 512-byte or 4-KiB
 * boundary chosen by the seed (image().tear says where).
 *
 * materialise(target) is the reboot: it writes the durable image into `target` (a plain
 * directory: run holdfast on it without FUSE). A file whose name is durable but whose data never
 * was is empty there (the classic zero-length file after a rename without fsync); a directory
 * entry that was renamed without fsyncing the old directory may appear under both names (as hard
 * links, or once for a directory).
 *
 * Reproducible: the crash point and the seed decide everything the model does. Which operations a
 * multi-threaded writer makes in which order can still vary between runs.
 *
 * @example
 * ```ts
 * const pl = await mountPowerLoss({ mode: 'tear', seed: 7 });
 * try {
 *   pl.crashAfter(40);
 *   // ... run a writer on pl.mountpoint until pl.crashed(), then SIGKILL it ...
 *   pl.materialise(rebooted);   // the disk as found after power returns
 * } finally {
 *   await pl.unmount();
 * }
 * ```
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { faultfsSkip, mountDaemon, type DaemonMount, type ErrnoName, type FaultFs, type FaultLogEntry, type FaultRule, type MountOptions } from './faultfs.js';

/** powerloss.py, found from both src/testing/ and build/testing/ (two levels below the root). */
const SCRIPT = fileURLToPath(new URL('../../src/testing/powerloss.py', import.meta.url));
/** The daemon's state directory inside the mount's temporary directory. */
const STATE = 'powerloss';

export type PowerLossMode = 'discard' | 'tear';

export interface PowerLossOptions extends MountOptions {
  /** discard (default) or tear. */
  mode?: PowerLossMode;
  /** Decides the tear (granularity, cut); default 0. */
  seed?: number;
  /** Crash at mutating operation n + 1 (see crashAfter()); default: no crash point. */
  crashAfter?: number | null;
}

/** One counted operation, as powerloss.py logged it (ops.log). */
export interface PowerLossOp {
  /** 1, 2, ...: the mutation counter; the crash line has the number the next operation would have had. */
  n: number;
  op: string;
  /** Path relative to the mount root ('.' is the root); absent for descriptor operations on an unlinked file. */
  path?: string | null;
  path2?: string;
  /** The errno name if the operation failed, else null. */
  err?: string | null;
  /** The line of the operation that was the crash (not performed). */
  crash?: true;
}

export interface TearInfo {
  ino: number;
  /** The torn write: file offset and length. */
  offset: number;
  length: number;
  /** The file offset where it was cut: offset ≤ cut ≤ offset + length; bytes [offset, cut) were applied. */
  cut: number;
  granularity: 512 | 4096;
}

/** STATE/image.json, written by powerloss.py at the crash. */
export interface DurableImage {
  version: 1;
  mode: PowerLossMode;
  seed: number;
  crashAfter: number | null;
  /** Mutating operations performed before the crash. */
  mutations: number;
  reason: 'crashAfter' | 'requested';
  /** The operation that met the crash. */
  op: string;
  /** Inode of the backing directory. */
  root: number;
  /** Durable listing of every directory: inode → name → inode. */
  dirs: Record<string, Record<string, number>>;
  /** Durable content that differs from the live content: inode → file in STATE/store ('' = empty). */
  files: Record<string, string>;
  tear: TearInfo | null;
}

export interface MaterialiseReport {
  image: DurableImage;
  files: number;
  dirs: number;
  symlinks: number;
  /** Image-relative paths of the torn file (tear mode), if any write was torn. */
  torn: string[];
  /** Entries not materialised: special files, and directories that appear under two names. */
  skipped: string[];
}

export interface PowerLossFs extends FaultFs {
  readonly mode: PowerLossMode;
  readonly seed: number;
  /** Mutating operations performed so far (from the operation log). */
  mutations(): number;
  /** The counted operations so far, oldest first. */
  ops(): PowerLossOp[];
  /** Crash at mutating operation n + 1 (counted from the mount; n below the count: at the next one), or never (null). */
  crashAfter(n: number | null): void;
  /** Crash now (synchronous: when it returns, the filesystem is frozen and image() is written). */
  crash(): void;
  /** Whether the crash has happened. */
  crashed(): boolean;
  /** The durable image, once crashed. */
  image(): DurableImage | undefined;
  /**
   * The reboot: write the durable image into `target` (created; must be empty if it exists).
   * Crashes first if that has not happened yet. Before unmount(): the image refers to files in
   * the mount's temporary directory.
   */
  materialise(target: string): MaterialiseReport;
  /** remount() is a clean restart: everything in the backing directory is durable again, no crash point. */
}

/** The value for node:test's `skip` option (see faultfsSkip). */
export function powerlossSkip(): string | false {
  const reason = faultfsSkip();
  if (reason) return reason;
  if (!fs.existsSync(SCRIPT)) return `${SCRIPT} is missing`;
  return false;
}

/** Mount a power-loss simulating passthrough; see the module comment. */
export async function mountPowerLoss(opts: PowerLossOptions = {}): Promise<PowerLossFs> {
  const reason = powerlossSkip();
  if (reason) throw new Error(reason);
  const mode = opts.mode ?? 'discard';
  if (mode !== 'discard' && mode !== 'tear') throw new Error(`powerloss: unknown mode ${JSON.stringify(mode)}`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new Error('powerloss: seed must be an integer');
  const pl = new PowerLoss(mode, seed, opts.crashAfter ?? null);
  const { mode: _m, seed: _s, crashAfter: _c, ...mountOpts } = opts;
  pl.attach(
    await mountDaemon(mountOpts, {
      script: SCRIPT,
      args: (root) => ['--state', path.join(root, STATE), '--mode', mode, '--seed', String(seed)],
      temp: [STATE],
      beforeStart: (root) => pl.beforeStart(root),
    }),
  );
  return pl;
}

class PowerLoss implements PowerLossFs {
  private m: DaemonMount | undefined;
  private state = '';
  private generation = 0;

  constructor(
    readonly mode: PowerLossMode,
    readonly seed: number,
    private after: number | null,
  ) {}

  attach(m: DaemonMount): void {
    this.m = m;
  }

  /** Before each start of the daemon: the state directory and a control file with the crash point. */
  beforeStart(root: string): void {
    this.state = path.join(root, STATE);
    fs.mkdirSync(this.state, { recursive: true, mode: 0o755 });
    this.writeControl(false);
  }

  private get mount(): DaemonMount {
    if (!this.m) throw new Error('powerloss: not mounted');
    return this.m;
  }

  get mountpoint(): string {
    return this.mount.mountpoint;
  }

  get backing(): string {
    return this.mount.backing;
  }

  // -- faultfs's interface

  setRules(rules: readonly FaultRule[]): void {
    this.mount.setRules(rules);
  }
  clear(): void {
    this.mount.clear();
  }
  staleAll(on: boolean): void {
    this.mount.staleAll(on);
  }
  failAll(errno: ErrnoName | number | null): void {
    this.mount.failAll(errno);
  }
  fired(): Promise<FaultLogEntry[]> {
    return this.mount.fired();
  }
  async remount(): Promise<void> {
    this.after = null;
    await this.mount.remount();
  }
  unmount(): Promise<void> {
    return this.m ? this.m.unmount() : Promise.resolve();
  }

  // -- the crash

  /** Same technique as faultfs.ts: temporary name, own mtime per version, rename over. */
  private writeControl(crash: boolean): void {
    this.generation++;
    const file = path.join(this.state, 'control.json');
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ crashAfter: this.after, crash })}\n`, { mode: 0o644 });
    fs.utimesSync(tmp, this.generation, this.generation);
    fs.renameSync(tmp, file);
  }

  crashAfter(n: number | null): void {
    if (n !== null && !(Number.isSafeInteger(n) && n >= 0)) throw new Error('powerloss: crashAfter needs null or a non-negative integer');
    this.after = n;
    this.writeControl(false);
  }

  crash(): void {
    if (this.crashed()) return;
    this.writeControl(true);
    // The daemon crashes at its next operation: make one (bounded; the kernel sends a getattr for
    // every stat of the root, as the attribute cache is off).
    for (let i = 0; i < 50 && !this.crashed(); i++) {
      try {
        fs.statSync(this.mountpoint);
      } catch {
        /* EIO: the crash */
      }
    }
    if (!this.crashed()) throw new Error(`powerloss: no crash image after asking for a crash (${this.mountpoint})`);
  }

  crashed(): boolean {
    return this.state !== '' && fs.existsSync(path.join(this.state, 'image.json'));
  }

  image(): DurableImage | undefined {
    if (!this.crashed()) return undefined;
    return JSON.parse(fs.readFileSync(path.join(this.state, 'image.json'), 'utf8')) as DurableImage;
  }

  ops(): PowerLossOp[] {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.state, 'ops.log'), 'utf8');
    } catch {
      return [];
    }
    const out: PowerLossOp[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line) as PowerLossOp);
      } catch {
        /* a line being written */
      }
    }
    return out;
  }

  mutations(): number {
    return this.ops().filter((o) => !o.crash).length;
  }

  materialise(target: string): MaterialiseReport {
    this.crash();
    const image = this.image();
    if (!image) throw new Error('powerloss: no crash image');
    return materialiseImage(image, this.backing, this.state, target);
  }
}

// ---------------------------------------------------------------------------------------------
// The reboot

/** Write `image` (inodes found below `backing` and STATE/graveyard, copies in STATE/store) into `target`. */
function materialiseImage(image: DurableImage, backing: string, state: string, target: string): MaterialiseReport {
  if (image.version !== 1) throw new Error(`powerloss: image version ${String(image.version)} is unknown`);
  // Where each inode lives now: nothing was really removed while mounted (powerloss.py's graveyard).
  const live = new Map<number, string>();
  for (const top of [backing, path.join(state, 'graveyard')]) {
    live.set(fs.lstatSync(top).ino, top);
    const stack = [top];
    for (let guard = 0; stack.length > 0 && guard < 10_000_000; guard++) {
      const d = stack.pop()!;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        const ino = fs.lstatSync(p).ino;
        if (!live.has(ino)) live.set(ino, p);
        if (e.isDirectory()) stack.push(p);
      }
    }
  }
  fs.mkdirSync(target, { recursive: true });
  if (fs.readdirSync(target).length > 0) throw new Error(`powerloss: ${target} is not empty`);

  const report: MaterialiseReport = { image, files: 0, dirs: 0, symlinks: 0, torn: [], skipped: [] };
  const asRoot = process.getuid?.() === 0;
  const made = new Map<number, string>(); // file inode → first path written (hard links)
  const seen = new Set<number>([image.root]);
  const dirModes: Array<[string, number]> = [];
  const setOwner = (dest: string, src: fs.Stats): void => {
    if (asRoot) fs.lchownSync(dest, src.uid, src.gid);
  };
  const rootStat = fs.lstatSync(backing);
  dirModes.push([target, rootStat.mode & 0o7777]);
  setOwner(target, rootStat);

  const stack: Array<{ ino: number; dest: string; rel: string }> = [{ ino: image.root, dest: target, rel: '' }];
  for (let guard = 0; stack.length > 0 && guard < 10_000_000; guard++) {
    const { ino, dest, rel } = stack.pop()!;
    const entries = image.dirs[String(ino)];
    if (!entries) throw new Error(`powerloss: directory inode ${ino} (${rel || '.'}) has no durable listing`);
    for (const name of Object.keys(entries).sort()) {
      const child = entries[name]!;
      const to = path.join(dest, name);
      const r = rel ? `${rel}/${name}` : name;
      const from = live.get(child);
      if (image.dirs[String(child)] !== undefined) {
        if (seen.has(child)) {
          report.skipped.push(`${r}: directory already materialised under another name`);
          continue;
        }
        seen.add(child);
        fs.mkdirSync(to);
        const st = from === undefined ? undefined : fs.lstatSync(from);
        dirModes.push([to, st ? st.mode & 0o7777 : 0o755]);
        if (st) setOwner(to, st);
        report.dirs++;
        stack.push({ ino: child, dest: to, rel: r });
        continue;
      }
      if (from === undefined) throw new Error(`powerloss: inode ${child} (${r}) is gone from the backing directory and the graveyard`);
      const st = fs.lstatSync(from);
      if (st.isFile()) {
        const first = made.get(child);
        if (first !== undefined) {
          fs.linkSync(first, to);
        } else {
          const durable = image.files[String(child)];
          if (durable === undefined) fs.copyFileSync(from, to);
          else if (durable === '') fs.writeFileSync(to, '');
          else fs.copyFileSync(path.join(state, 'store', durable), to);
          fs.chmodSync(to, st.mode & 0o7777);
          setOwner(to, st);
          made.set(child, to);
        }
        if (image.tear?.ino === child) report.torn.push(r);
        report.files++;
      } else if (st.isSymbolicLink()) {
        fs.symlinkSync(fs.readlinkSync(from), to);
        setOwner(to, st);
        report.symlinks++;
      } else {
        report.skipped.push(`${r}: special file (not materialised)`);
      }
    }
  }
  // Directory modes last, deepest first, so that a read-only directory can still be filled.
  for (const [d, mode] of dirModes.reverse()) fs.chmodSync(d, mode);
  return report;
}

/** A file's signature in listTree(): size and a SHA-256 prefix. */
export function fileSignature(data: Buffer): string {
  return `file ${data.length} B sha256 ${createHash('sha256').update(data).digest('hex').slice(0, 12)}`;
}

/**
 * Every entry of a plain directory, iteratively and bounded: relative path → 'dir',
 * 'symlink → <target>', fileSignature() of a file's content, or 'special'.
 */
export function listTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const stack = [''];
  for (let guard = 0; stack.length > 0 && guard < 1_000_000; guard++) {
    const rel = stack.pop()!;
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const p = path.join(root, r);
      if (e.isDirectory()) {
        out.set(r, 'dir');
        stack.push(r);
      } else if (e.isSymbolicLink()) out.set(r, `symlink → ${fs.readlinkSync(p)}`);
      else if (e.isFile()) out.set(r, fileSignature(fs.readFileSync(p)));
      else out.set(r, 'special');
    }
  }
  return out;
}

/**
 * How two trees differ, for assertion messages ("what the power loss took"): paths only in one of
 * them, and files whose content or size differs. Bounded to `limit` lines.
 */
export function treeDiff(before: string, after: string, limit = 40): string[] {
  const a = listTree(before);
  const b = listTree(after);
  const lines: string[] = [];
  for (const k of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(k);
    const y = b.get(k);
    if (x === y) continue;
    if (lines.length >= limit) {
      lines.push('…');
      break;
    }
    lines.push(`${k}: ${x ?? '(absent)'} → ${y ?? '(absent)'}`);
  }
  return lines;
}
