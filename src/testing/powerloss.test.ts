/**
 * The power-loss layer (powerloss.ts, powerloss.py), first on its own and then under holdfast.
 *
 * Model: small deterministic scenarios (what survives a crash and what does not), the crash point
 * and the freeze, the tear mode's cut, and seeded random operation sequences whose crash image
 * must equal what an independent reference model (below, in TypeScript) says.
 *
 * holdfast: `init`, two `backup` runs of a small generated tree, two `pg archive-push` of WAL
 * segments, `forget` of the first snapshot and a repacking `prune`, on a repository inside the
 * power-loss mount, crashed after a seeded number of mutating operations (spread over the whole
 * sequence), in discard and tear mode; then, on the materialised image (a plain directory, no
 * FUSE): `check --read-data` passes, every snapshot whose backup had exited 0 restores
 * byte-identical (and any other snapshot there restores to what its backup read), every WAL file
 * whose push had exited 0 is there with its bytes, and carrying on needs no manual step: pushing
 * the WAL again, the next backup, prune again, check (the crashed writer's locks are stale: its
 * PID is gone). HOLDFAST_POWERLOSS_TRIALS sets the number of crash points (default 20),
 * HOLDFAST_POWERLOSS_JOBS how many run at a time (default 2),
 * HOLDFAST_POWERLOSS_SEED the seed they are drawn with. A trial that fails only with a known bug
 * (KNOWN_BUGS) is reported by that bug's `todo` test instead.
 *
 * Last, a scenario that a single power loss cannot produce: earlier writers killed inside the
 * local driver's ensureDir, then a backup, then the power loss (it found a durability bug, fixed).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { listFiles, restoredPath, within } from './e2e.js';
import { hasErrno } from './faultfs.js';
import { CLI, Rng, TEST_KDF, cliSpawn, describeTree, generateTree, type TreeEntry } from './helpers.js';
import { syncTree, syncfsCovers } from '../util/fsync.js';
import { type DurableImage, type MaterialiseReport, type PowerLossFs, type PowerLossMode, type PowerLossOp, fileSignature, listTree, mountPowerLoss, powerlossSkip, treeDiff } from './powerloss.js';

const SKIP = powerlossSkip();

// ---------------------------------------------------------------------------------------------
// Small helpers

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Write a file, and make it durable only as far as asked. */
function writeFile(p: string, data: string | Buffer, opts: { fsync?: boolean; dirFsync?: boolean } = {}): void {
  const fd = fs.openSync(p, 'wx');
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    if (opts.fsync) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (opts.dirFsync) fsyncPath(path.dirname(p));
}

function read(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function sorted(m: Map<string, string>): Array<[string, string]> {
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/**
 * Mount, prepare the backing directory (durable at mount), act through the mount, crash, and
 * return the materialised image (a fresh directory) with the report. Cleans up the mount; the
 * image directory is removed after the test by the caller's `after`.
 */
async function scenario(
  work: string,
  name: string,
  opts: { mode?: PowerLossMode; seed?: number; prepare?: (backing: string) => void; act: (m: string, pl: PowerLossFs) => void },
): Promise<{ image: string; report: MaterialiseReport; ops: PowerLossOp[]; img: DurableImage }> {
  const backing = path.join(work, `${name}-backing`);
  fs.mkdirSync(backing);
  opts.prepare?.(backing);
  const pl = await mountPowerLoss({ backing, mode: opts.mode ?? 'discard', seed: opts.seed ?? 0 });
  try {
    opts.act(pl.mountpoint, pl);
    const image = path.join(work, `${name}-image`);
    const report = pl.materialise(image);
    return { image, report, ops: pl.ops(), img: report.image };
  } finally {
    await pl.unmount();
  }
}

// ---------------------------------------------------------------------------------------------
// The model

describe('power-loss model', { skip: SKIP, timeout: 120_000 }, () => {
  let work: string;
  before(() => {
    // Beside the mounts' own temporary directories: the backing must share their filesystem.
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-powerloss-model-'));
  });
  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it("receives Node's directory fsync (open O_RDONLY + fsync) as FSYNCDIR and counts it", async () => {
    const { image, ops } = await scenario(work, 'fsyncdir', {
      act: (m) => {
        fs.mkdirSync(path.join(m, 'd'));
        fsyncPath(m);
        fsyncPath(path.join(m, 'd'));
      },
    });
    assert.deepEqual(
      ops.filter((o) => !o.crash).map((o) => [o.n, o.op, o.path, o.err]),
      [
        [1, 'mkdir', 'd', null],
        [2, 'fsyncdir', '.', null],
        [3, 'fsyncdir', 'd', null],
      ],
    );
    assert.deepEqual(sorted(listTree(image)), [['d', 'dir']]);
  });

  it('loses a write without fsync; a durable name whose data never was fsynced is an empty file', async () => {
    const { image } = await scenario(work, 'nofsync', {
      prepare: (b) => fs.writeFileSync(path.join(b, 'old'), 'durable at mount'),
      act: (m) => {
        fs.writeFileSync(path.join(m, 'old'), 'overwritten, never fsynced'); // O_TRUNC + write
        assert.equal(read(path.join(m, 'old')), 'overwritten, never fsynced', 'the live view has it');
        writeFile(path.join(m, 'new'), 'data, never fsynced', { dirFsync: true });
        writeFile(path.join(m, 'synced'), 'fsynced', { fsync: true, dirFsync: true });
        const fd = fs.openSync(path.join(m, 'synced'), 'r+');
        fs.writeSync(fd, 'FS', 0, 'utf8'); // after the fsync: lost
        fs.ftruncateSync(fd, 5);
        fs.closeSync(fd);
      },
    });
    assert.equal(read(path.join(image, 'old')), 'durable at mount');
    assert.equal(read(path.join(image, 'new')), '', 'zero-length: the name was durable, the data was not');
    assert.equal(read(path.join(image, 'synced')), 'fsynced');
  });

  it('loses a new name when only the file was fsynced, not its directory', async () => {
    const { image } = await scenario(work, 'nodirfsync', {
      act: (m) => {
        writeFile(path.join(m, 'f'), 'fsynced data', { fsync: true });
        fs.mkdirSync(path.join(m, 'sub'));
        fsyncPath(m); // sub and f are durable names now...
        writeFile(path.join(m, 'sub', 'g'), 'fsynced, but sub never was', { fsync: true });
        writeFile(path.join(m, 'late'), 'after the last root fsync', { fsync: true });
      },
    });
    assert.deepEqual(sorted(listTree(image)), [
      ['f', fileSignature(Buffer.from('fsynced data'))],
      ['sub', 'dir'],
    ]);
  });

  it("keeps a temporary file + fsync + rename + directory fsync (the local driver's put)", async () => {
    const { image } = await scenario(work, 'put', {
      act: (m) => {
        fs.mkdirSync(path.join(m, 'data'));
        fsyncPath(m);
        writeFile(path.join(m, 'data', '.tmp-x'), 'object bytes', { fsync: true });
        fs.renameSync(path.join(m, 'data', '.tmp-x'), path.join(m, 'data', 'obj'));
        fsyncPath(path.join(m, 'data'));
        // createOnly: link, unlink the temporary name, fsync the directory.
        writeFile(path.join(m, 'data', '.tmp-y'), 'created once', { fsync: true });
        fs.linkSync(path.join(m, 'data', '.tmp-y'), path.join(m, 'data', 'once'));
        fs.unlinkSync(path.join(m, 'data', '.tmp-y'));
        fsyncPath(path.join(m, 'data'));
      },
    });
    assert.deepEqual(sorted(listTree(image)), [
      ['data', 'dir'],
      ['data/obj', fileSignature(Buffer.from('object bytes'))],
      ['data/once', fileSignature(Buffer.from('created once'))],
    ]);
  });

  it('keeps the old names after renames without a directory fsync', async () => {
    const { image, report } = await scenario(work, 'rename', {
      prepare: (b) => {
        fs.writeFileSync(path.join(b, 'a'), 'A');
        fs.writeFileSync(path.join(b, 'x'), 'X');
        fs.writeFileSync(path.join(b, 'y'), 'Y');
        fs.mkdirSync(path.join(b, 'from'));
        fs.mkdirSync(path.join(b, 'to'));
        fs.writeFileSync(path.join(b, 'from', 'moved'), 'M');
      },
      act: (m) => {
        fs.renameSync(path.join(m, 'a'), path.join(m, 'b'));
        fs.renameSync(path.join(m, 'x'), path.join(m, 'y')); // over an existing file
        assert.equal(read(path.join(m, 'y')), 'X');
        // Across directories, only the destination fsynced: both names survive (conservative).
        fs.renameSync(path.join(m, 'from', 'moved'), path.join(m, 'to', 'moved'));
        fsyncPath(path.join(m, 'to'));
      },
    });
    assert.deepEqual(sorted(listTree(image)), [
      ['a', fileSignature(Buffer.from('A'))],
      ['from', 'dir'],
      ['from/moved', fileSignature(Buffer.from('M'))],
      ['to', 'dir'],
      ['to/moved', fileSignature(Buffer.from('M'))],
      ['x', fileSignature(Buffer.from('X'))],
      ['y', fileSignature(Buffer.from('Y'))],
    ]);
    assert.equal(fs.statSync(path.join(image, 'to', 'moved')).ino, fs.statSync(path.join(image, 'from', 'moved')).ino, 'one inode, two names');
    assert.deepEqual(report.skipped, []);
  });

  it('keeps unlinked files and removed directories until their directory is fsynced', async () => {
    const { image } = await scenario(work, 'unlink', {
      prepare: (b) => {
        fs.writeFileSync(path.join(b, 'gone'), 'G');
        fs.writeFileSync(path.join(b, 'kept'), 'K');
        fs.mkdirSync(path.join(b, 'd'));
        fs.writeFileSync(path.join(b, 'd', 'inner'), 'I');
      },
      act: (m) => {
        fs.unlinkSync(path.join(m, 'kept'));
        fs.unlinkSync(path.join(m, 'd', 'inner'));
        fs.rmdirSync(path.join(m, 'd'));
        assert.deepEqual(fs.readdirSync(m), ['gone']);
        // Recreate 'kept' with new data (fsynced): the name's removal and re-creation are not durable.
        writeFile(path.join(m, 'kept'), 'new K', { fsync: true });
        fs.mkdirSync(path.join(m, 'other'));
        fs.unlinkSync(path.join(m, 'gone'));
        fsyncPath(path.join(m, 'other')); // not the root
      },
    });
    assert.deepEqual(sorted(listTree(image)), [
      ['d', 'dir'],
      ['d/inner', fileSignature(Buffer.from('I'))],
      ['gone', fileSignature(Buffer.from('G'))],
      ['kept', fileSignature(Buffer.from('K'))],
    ]);
  });

  it('crashes after the N-th mutating operation: it and everything later fail with EIO', async () => {
    const { image, ops, img } = await scenario(work, 'crashafter', {
      act: (m, pl) => {
        pl.crashAfter(4);
        const fd = fs.openSync(path.join(m, 'f'), 'wx'); // 1 create
        fs.writeSync(fd, 'abc'); // 2 write
        fs.fsyncSync(fd); // 3 fsync
        fsyncPath(m); // 4 fsyncdir
        assert.equal(pl.crashed(), false);
        assert.ok(fs.readFileSync(path.join(m, 'f')).length === 3, 'reads are not counted');
        const e = (() => {
          try {
            fs.writeSync(fd, 'def'); // 5: the crash
          } catch (err) {
            return err;
          }
          return undefined;
        })();
        assert.ok(hasErrno(e, 'EIO'), `the 5th mutation fails with EIO, got ${String(e)}`);
        assert.ok(pl.crashed());
        for (const act of [() => fs.statSync(m), () => fs.readdirSync(m), () => fs.readFileSync(path.join(m, 'f')), () => fs.mkdirSync(path.join(m, 'x'))]) {
          assert.throws(act, (err) => hasErrno(err, 'EIO'));
        }
        fs.closeSync(fd); // close still works
      },
    });
    assert.deepEqual(
      ops.map((o) => [o.n, o.op, o.crash ?? false]),
      [
        [1, 'create', false],
        [2, 'write', false],
        [3, 'fsync', false],
        [4, 'fsyncdir', false],
        [5, 'write', true],
      ],
    );
    assert.equal(img.mutations, 4);
    assert.equal(img.op, 'write');
    assert.equal(read(path.join(image, 'f')), 'abc');
  });

  it('tears the last write of a surviving file at a 512-byte or 4-KiB boundary, chosen by the seed', async () => {
    const base = Buffer.alloc(1000, 0x61);
    const rng = new Rng(512);
    const data = rng.bytes(20_000);
    const offset = 300;
    const seen = new Map<number, number>(); // seed → cut
    const grans = new Set<number>();
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 1]) {
      const { image, report, img } = await scenario(work, `tear-${seed}-${seen.has(seed) ? 'again' : 'first'}`, {
        mode: 'tear',
        seed,
        prepare: (b) => {
          fs.writeFileSync(path.join(b, 't'), base);
          fs.writeFileSync(path.join(b, 'other'), 'O');
        },
        act: (m) => {
          const fd = fs.openSync(path.join(m, 't'), 'r+');
          fs.writeSync(fd, data, 0, data.length, offset);
          fs.closeSync(fd);
          // A later write to a file whose name is not durable is not the one torn...
          writeFile(path.join(m, 'fresh'), rng.bytes(9000));
          // ...nor is a write that was fsynced.
          const o = fs.openSync(path.join(m, 'other'), 'r+');
          fs.writeSync(o, Buffer.alloc(5000, 0x62), 0, 5000, 0);
          fs.fsyncSync(o);
          fs.closeSync(o);
        },
      });
      const tear = img.tear;
      assert.ok(tear, 'a write was torn');
      assert.equal(tear.offset, offset);
      assert.equal(tear.length, data.length);
      assert.ok(tear.granularity === 512 || tear.granularity === 4096);
      assert.equal(tear.cut % tear.granularity, 0, `cut ${tear.cut} on a ${tear.granularity}-byte boundary`);
      assert.ok(tear.cut > offset && tear.cut < offset + data.length, `cut ${tear.cut} inside the write`);
      assert.deepEqual(report.torn, ['t']);
      const expected = Buffer.alloc(Math.max(base.length, tear.cut), 0);
      base.copy(expected);
      data.copy(expected, offset, 0, tear.cut - offset);
      assert.deepEqual(fs.readFileSync(path.join(image, 't')), expected);
      assert.equal(read(path.join(image, 'other')), 'b'.repeat(5000));
      assert.equal(fs.existsSync(path.join(image, 'fresh')), false);
      if (seen.has(seed)) assert.equal(tear.cut, seen.get(seed), 'the same seed cuts at the same place');
      seen.set(seed, tear.cut);
      grans.add(tear.granularity);
    }
    assert.deepEqual([...grans].sort((a, b) => a - b), [512, 4096], 'both granularities over eight seeds');
  });

  it('applies a write inside one sector wholly or not at all (tear mode)', async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 10; seed++) {
      const { image, img } = await scenario(work, `sector-${seed}`, {
        mode: 'tear',
        seed,
        prepare: (b) => fs.writeFileSync(path.join(b, 's'), 'x'.repeat(600)),
        act: (m) => {
          const fd = fs.openSync(path.join(m, 's'), 'r+');
          fs.writeSync(fd, 'YYYY', 520); // inside the second sector
          fs.closeSync(fd);
        },
      });
      const tear = img.tear;
      assert.ok(tear);
      assert.ok(tear.cut === 520 || tear.cut === 524, `all or nothing, got cut ${tear.cut}`);
      const got = read(path.join(image, 's'))!;
      assert.equal(got, tear.cut === 524 ? `${'x'.repeat(520)}YYYY${'x'.repeat(76)}` : 'x'.repeat(600));
      outcomes.add(String(tear.cut));
    }
    assert.equal(outcomes.size, 2, 'both outcomes over ten seeds');
  });

  for (const mode of ['discard', 'tear'] as const) {
    it(`gives the image a reference model predicts, for seeded random operations (${mode})`, async () => {
      let torn = 0;
      for (let seed = 11; seed <= 20; seed++) if (await randomTrial(work, mode, seed)) torn++;
      if (mode === 'tear') assert.ok(torn >= 3, `only ${torn} of 10 trials tore a write`);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The reference model: the same rules, written independently, over Node's view of the mount.

interface RFile {
  kind: 'file';
  ino: number;
  live: Buffer;
  durable: Buffer;
  /** Last write since the last fsync (or truncate): tear mode's candidate. */
  last?: { seq: number; offset: number; data: Buffer };
}
interface RDir {
  kind: 'dir';
  live: Map<string, RNode>;
  durable: Map<string, RNode>;
}
type RNode = RFile | RDir;

function patch(buf: Buffer, offset: number, data: Buffer): Buffer {
  const out = Buffer.alloc(Math.max(buf.length, offset + data.length));
  buf.copy(out);
  data.copy(out, offset);
  return out;
}

function resize(buf: Buffer, len: number): Buffer {
  const out = Buffer.alloc(len);
  buf.copy(out, 0, 0, Math.min(len, buf.length));
  return out;
}

/**
 * One mount, up to 80 seeded random operations through it, each exactly one counted mutation, a
 * crash after a seeded number of them; the materialised image must be what the reference model
 * says (in tear mode: given the cut powerloss.py chose, which must be a legal one).
 */
async function randomTrial(work: string, mode: PowerLossMode, seed: number): Promise<boolean> {
  const rng = new Rng(seed);
  const OPS = 80;
  const crashAfter = 10 + rng.int(OPS - 10);
  const root: RDir = { kind: 'dir', live: new Map(), durable: new Map() };
  const log: string[] = [];
  let seq = 0;
  const { image, img, ops } = await scenario(work, `random-${mode}-${seed}`, {
    mode,
    seed,
    act: (m, pl) => {
      pl.crashAfter(crashAfter);
      const dirs = (): Array<{ rel: string; d: RDir }> => {
        const out = [{ rel: '', d: root }];
        for (let i = 0; i < out.length; i++) {
          for (const [n, c] of out[i]!.d.live) if (c.kind === 'dir') out.push({ rel: out[i]!.rel ? `${out[i]!.rel}/${n}` : n, d: c });
        }
        return out;
      };
      const files = (): Array<{ rel: string; parent: RDir; name: string; f: RFile }> => {
        const out: Array<{ rel: string; parent: RDir; name: string; f: RFile }> = [];
        for (const { rel, d } of dirs()) for (const [n, c] of d.live) if (c.kind === 'file') out.push({ rel: rel ? `${rel}/${n}` : n, parent: d, name: n, f: c });
        return out;
      };
      const pick = <T>(xs: readonly T[]): T | undefined => (xs.length === 0 ? undefined : xs[rng.int(xs.length)]);
      const abs = (rel: string): string => path.join(m, rel);
      const names = ['a', 'b', 'c', 'd', 'e'];
      for (let i = 0; i < OPS; i++) {
        const choice = rng.int(100);
        // Each action makes exactly one counted mutation (see the module doc of powerloss.ts), so
        // the reference applies it only when the call succeeded.
        let act: (() => void) | undefined;
        let apply: (() => void) | undefined;
        let what = '';
        if (choice < 18) {
          const { rel, d } = pick(dirs())!;
          const name = pick(names)!;
          if (d.live.has(name)) continue;
          const p = rel ? `${rel}/${name}` : name;
          what = `create ${p}`;
          let ino = 0;
          act = () => {
            const fd = fs.openSync(abs(p), 'wx');
            ino = fs.fstatSync(fd).ino;
            fs.closeSync(fd);
          };
          apply = () => d.live.set(name, { kind: 'file', ino, live: Buffer.alloc(0), durable: Buffer.alloc(0) });
        } else if (choice < 40) {
          const t = pick(files());
          if (!t) continue;
          const offset = rng.int(3) === 0 ? t.f.live.length : rng.int(12_000);
          const data = rng.bytes(1 + rng.int(12_000));
          what = `write ${t.rel} @${offset} +${data.length}`;
          act = () => {
            const fd = fs.openSync(abs(t.rel), 'r+');
            try {
              assert.equal(fs.writeSync(fd, data, 0, data.length, offset), data.length);
            } finally {
              fs.closeSync(fd);
            }
          };
          apply = () => {
            t.f.live = patch(t.f.live, offset, data);
            t.f.last = { seq: ++seq, offset, data };
          };
        } else if (choice < 45) {
          const t = pick(files());
          if (!t) continue;
          const len = rng.int(t.f.live.length + 1);
          what = `truncate ${t.rel} ${len}`;
          act = () => fs.truncateSync(abs(t.rel), len);
          apply = () => {
            t.f.live = resize(t.f.live, len);
            delete t.f.last;
          };
        } else if (choice < 60) {
          const t = pick(files());
          if (!t) continue;
          what = `fsync ${t.rel}`;
          act = () => fsyncPath(abs(t.rel));
          apply = () => {
            t.f.durable = Buffer.from(t.f.live);
            delete t.f.last;
          };
        } else if (choice < 72) {
          const { rel, d } = pick(dirs())!;
          what = `fsyncdir ${rel || '.'}`;
          act = () => fsyncPath(rel ? abs(rel) : m);
          apply = () => (d.durable = new Map(d.live));
        } else if (choice < 82) {
          const t = pick(files());
          const to = pick(dirs())!;
          const name = pick(names)!;
          if (!t || to.d.live.get(name)?.kind === 'dir') continue;
          const p = to.rel ? `${to.rel}/${name}` : name;
          what = `rename ${t.rel} ${p}`;
          act = () => fs.renameSync(abs(t.rel), abs(p));
          apply = () => {
            if (to.d.live.get(name) === t.f) return; // same inode: nothing happens
            t.parent.live.delete(t.name);
            to.d.live.set(name, t.f);
          };
        } else if (choice < 88) {
          const t = pick(files());
          if (!t) continue;
          what = `unlink ${t.rel}`;
          act = () => fs.unlinkSync(abs(t.rel));
          apply = () => t.parent.live.delete(t.name);
        } else if (choice < 93) {
          const t = pick(files());
          const to = pick(dirs())!;
          const name = pick(names)!;
          if (!t || to.d.live.has(name)) continue;
          const p = to.rel ? `${to.rel}/${name}` : name;
          what = `link ${t.rel} ${p}`;
          act = () => fs.linkSync(abs(t.rel), abs(p));
          apply = () => to.d.live.set(name, t.f);
        } else if (choice < 97) {
          const all = dirs();
          const { rel, d } = pick(all.filter((x) => x.rel.split('/').length < 2))!;
          const name = `s${rng.int(3)}`;
          if (d.live.has(name)) continue;
          const p = rel ? `${rel}/${name}` : name;
          what = `mkdir ${p}`;
          act = () => fs.mkdirSync(abs(p));
          apply = () => d.live.set(name, { kind: 'dir', live: new Map(), durable: new Map() });
        } else {
          // rmdir an empty directory
          const empty: Array<{ parent: RDir; name: string; rel: string }> = [];
          for (const { rel, d } of dirs()) for (const [n, c] of d.live) if (c.kind === 'dir' && c.live.size === 0) empty.push({ parent: d, name: n, rel: rel ? `${rel}/${n}` : n });
          const t = pick(empty);
          if (!t) continue;
          what = `rmdir ${t.rel}`;
          act = () => fs.rmdirSync(abs(t.rel));
          apply = () => t.parent.live.delete(t.name);
        }
        try {
          act!();
        } catch (e) {
          assert.ok(hasErrno(e, 'EIO') && pl.crashed(), `seed ${seed}: ${what} failed before the crash: ${String(e)}\n${log.join('\n')}`);
          log.push(`${what} → crash`);
          break;
        }
        apply!();
        log.push(what);
      }
    },
  });

  const ctx = `seed ${seed} (${mode}), crash after ${crashAfter}:\n${log.join('\n')}`;
  assert.equal(img.mutations, ops.filter((o) => !o.crash).length, ctx);
  assert.ok(img.mutations <= crashAfter, ctx);
  // Expected image: durable listings from the root, durable contents; in tear mode the chosen
  // write applied partially (checked against the reference's candidate).
  const reachable: RFile[] = [];
  const seen = new Set<RDir>();
  const walk = (d: RDir, f: (n: RNode) => void): void => {
    if (seen.has(d)) return;
    seen.add(d);
    for (const c of d.durable.values()) {
      f(c);
      if (c.kind === 'dir') walk(c, f);
    }
  };
  walk(root, (c) => {
    if (c.kind === 'file' && !reachable.includes(c)) reachable.push(c);
  });
  let torn: RFile | undefined;
  if (mode === 'tear') {
    for (const f of reachable) if (f.last && (!torn || f.last.seq > torn.last!.seq)) torn = f;
    if (!torn) assert.equal(img.tear, null, ctx);
    else {
      const t = img.tear;
      assert.ok(t, `expected a torn write\n${ctx}`);
      assert.equal(t.ino, torn.ino, ctx);
      assert.deepEqual([t.offset, t.length], [torn.last!.offset, torn.last!.data.length], ctx);
      const end = t.offset + t.length;
      const inside512 = Math.floor(t.offset / 512) + 1 <= Math.floor((end - 1) / 512);
      if (inside512) {
        assert.ok(t.cut > t.offset && t.cut < end && t.cut % t.granularity === 0, `cut ${t.cut} (${t.granularity}) of ${t.offset}+${t.length}\n${ctx}`);
      } else {
        assert.ok(t.cut === t.offset || t.cut === end, ctx);
      }
    }
  }
  const expected = new Map<string, string>();
  seen.clear();
  const describe = (d: RDir, rel: string): void => {
    if (seen.has(d)) return;
    seen.add(d);
    for (const [n, c] of d.durable) {
      const r = rel ? `${rel}/${n}` : n;
      if (c.kind === 'dir') {
        expected.set(r, 'dir');
        describe(c, r);
      } else {
        let content = c.durable;
        if (c === torn && img.tear) content = patch(c.durable, img.tear.offset, torn.last!.data.subarray(0, img.tear.cut - img.tear.offset));
        expected.set(r, fileSignature(content));
      }
    }
  };
  describe(root, '');
  assert.deepEqual(sorted(listTree(image)), sorted(expected), ctx);
  return img.tear !== null;
}

// ---------------------------------------------------------------------------------------------
// holdfast under power loss

const PASSWORD = 'power loss';
const STEPS = ['init', 'backup 1', 'push 1', 'backup 2', 'push 2', 'forget 1', 'prune'] as const;
type Step = (typeof STEPS)[number];
/** The calls of a trial; those in one group run at the same time (two writers, two locks). */
const GROUPS: readonly (readonly Step[])[] = [['init'], ['backup 1'], ['push 1'], ['backup 2', 'push 2'], ['forget 1'], ['prune']];
const CLUSTER = 'main';
/** The tree is tiny: chunking on the main thread saves starting worker threads (CPU is what a trial costs). */
const BACKUP_OPTS = ['--jobs', '0'];
/** Any one holdfast call in a trial (they take well under a second here). */
const CALL_TIMEOUT_MS = 60_000;

function envInt(name: string, dflt: number, min: number, max: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(v)}`);
  return n;
}

interface Run {
  args: readonly string[];
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The power went out while it ran (it was then SIGKILLed). */
  crashed: boolean;
}

function showRun(r: Run): string {
  const cut = (x: string): string => (x.length > 3000 ? `${x.slice(0, 1500)}\n…\n${x.slice(-1500)}` : x);
  return `holdfast ${r.args.join(' ')} → ${r.signal ?? `exit ${String(r.status)}`}${r.crashed ? ' (crashed)' : ''}\n--- stdout\n${cut(r.stdout)}\n--- stderr\n${cut(r.stderr)}`;
}

/**
 * Run the CLI without blocking (trials run side by side). With `pl`: when the power goes out
 * while it runs, SIGKILL it, as the power loss would have. Bounded by CALL_TIMEOUT_MS.
 */
async function runCli(args: readonly string[], env: Record<string, string>, pl?: PowerLossFs): Promise<Run> {
  const child = cliSpawn(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let done: { status: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<void>((resolve) =>
    child.on('close', (status, signal) => {
      done = { status, signal };
      resolve();
    }),
  );
  let crashed = false;
  const deadline = Date.now() + CALL_TIMEOUT_MS;
  while (done === undefined && Date.now() < deadline) {
    if (pl && !crashed && pl.crashed()) {
      crashed = true;
      child.kill('SIGKILL');
    }
    await Promise.race([exited, sleep(5)]);
  }
  if (done === undefined) {
    child.kill('SIGKILL');
    await within(exited, 10_000);
    throw new Error(`holdfast ${args.join(' ')} did not finish within ${CALL_TIMEOUT_MS} ms\n${stderr}`);
  }
  // It may have met the crash and exited on its own before we saw it.
  if (pl && !crashed && pl.crashed() && done.status !== 0) crashed = true;
  return { args, status: done.status, signal: done.signal, stdout, stderr, crashed };
}

/** The source tree of backup 1 (the same in every trial): small files, one of several chunks, odd names, symlinks. */
async function makeSource(src: string): Promise<void> {
  await generateTree(src, { seed: 4242, smallFiles: 14, emptyFiles: 2, symlinks: true });
  const rng = new Rng(4243);
  fs.writeFileSync(path.join(src, 'large.bin'), rng.bytes(1_600_000)); // one or two chunks, a pack of its own
}

/**
 * A 1 MiB WAL segment of timeline 1 whose header holdfast accepts (PostgreSQL 16, the smallest
 * segment size), with some seeded bytes so that every segment is different; written outside the
 * mount, as pg_wal is.
 */
function makeSegment(dir: string, segNo: number): string {
  const segSize = 1 << 20;
  const buf = Buffer.alloc(segSize);
  buf.writeUInt16LE(0xd113, 0); // XLOG_PAGE_MAGIC of PostgreSQL 16
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(1, 4); // timeline
  buf.writeBigUInt64LE(BigInt(segNo) * BigInt(segSize), 8); // page address: the segment's start
  buf.writeBigUInt64LE(7_300_000_000_000_000_001n, 24); // system identifier
  buf.writeUInt32LE(segSize, 32);
  buf.writeUInt32LE(8192, 36); // WAL block size
  new Rng(9000 + segNo).bytes(24_000).copy(buf, 8192);
  const segsPerId = 0x1_0000_0000 / segSize;
  const hex8 = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
  const file = path.join(dir, `${hex8(1)}${hex8(Math.floor(segNo / segsPerId))}${hex8(segNo % segsPerId)}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, buf);
  return file;
}

/** Change the tree before backup `k` (2, ...): rewrite, add, remove and chmod a few entries. */
function mutateSource(src: string, k: number): void {
  const rng = new Rng(5000 + k);
  const files = listFiles(src).filter((f) => !f.startsWith('link') && f !== 'dangling' && fs.lstatSync(path.join(src, f)).isFile());
  for (let i = 0; i < 3; i++) {
    const f = files[rng.int(files.length)]!;
    fs.writeFileSync(path.join(src, f), rng.bytes(500 + rng.int(30_000)));
  }
  fs.writeFileSync(path.join(src, `added-${k}.txt`), rng.text(4000 + rng.int(20_000)));
  fs.mkdirSync(path.join(src, `dir-${k}`), { recursive: true });
  fs.writeFileSync(path.join(src, `dir-${k}`, 'inner'), rng.bytes(700));
  const victim = files.find((f) => f.startsWith('d') && fs.existsSync(path.join(src, f)));
  if (victim) fs.rmSync(path.join(src, victim));
  fs.chmodSync(path.join(src, 'empty-0'), 0o600 + k);
}

interface Sequence {
  src: string;
  env: Record<string, string>;
  /** Each call: its group (index in GROUPS), and the mutation count when its group ended. */
  runs: Array<{ step: Step; group: number; run: Run; mutations: number }>;
  /** What each backup read: describeTree of the source just before it ran. */
  expected: Map<Step, Map<string, TreeEntry>>;
  /** The WAL segment each push offered. */
  segments: Map<Step, string>;
}

/**
 * init, two backups, two WAL pushes (pg archive-push: create-only named objects, and the
 * cluster record on the first), forget of the first snapshot and a prune that repacks (deletes
 * packs and index files) on `repo`, stopping at the first call that met the crash.
 */
async function runSequence(ws: string, repo: string, pl: PowerLossFs): Promise<Sequence> {
  const src = path.join(ws, 'src');
  await makeSource(src);
  const env = { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_LOCK_DIR: path.join(ws, 'locks') };
  const seq: Sequence = { src, env, runs: [], expected: new Map(), segments: new Map() };
  for (const [g, group] of GROUPS.entries()) {
    const calls: Array<{ step: Step; args: string[] }> = [];
    for (const step of group) {
      let args: string[];
      if (step === 'init') args = ['init', '--kdf-cost', TEST_KDF];
      else if (step === 'forget 1') args = ['forget', snapshotOf(seq, 'backup 1')!];
      else if (step === 'prune') args = ['prune', '--max-unused', '0'];
      else if (step.startsWith('push')) {
        const segment = makeSegment(path.join(ws, 'pg_wal'), Number(step.slice(5)));
        seq.segments.set(step, segment);
        args = ['pg', 'archive-push', '--cluster', CLUSTER, segment];
      } else {
        const k = Number(step.slice(7));
        if (k >= 2) mutateSource(src, k);
        seq.expected.set(step, await describeTree(src));
        args = ['backup', '--json', ...BACKUP_OPTS, src];
      }
      calls.push({ step, args });
    }
    const runs = await Promise.all(calls.map((c) => runCli(c.args, env, pl)));
    const mutations = pl.mutations();
    for (const [i, run] of runs.entries()) seq.runs.push({ step: calls[i]!.step, group: g, run, mutations });
    if (runs.some((r) => r.crashed)) break;
    for (const run of runs) assert.equal(run.status, 0, `no crash, yet it failed:\n${showRun(run)}`);
  }
  return seq;
}

/** The snapshot id a backup step reported, if it exited 0. */
function snapshotOf(seq: Sequence, step: Step): string | undefined {
  const run = seq.runs.find((r) => r.step === step)?.run;
  return run?.status === 0 ? (JSON.parse(run.stdout) as { snapshot: string }).snapshot : undefined;
}

/** The file system type of `p` as `stat -f` names it (an independent look at what syncfsCovers decides). */
function fsTypeName(p: string): string {
  const t = spawnSync('stat', ['-f', '-c', '%T', p], { encoding: 'utf8' }).stdout.trim();
  return t === 'ext2/ext3' ? 'ext2/3/4' : t;
}

function compareTrees(expected: Map<string, TreeEntry>, actual: Map<string, TreeEntry>): string[] {
  const diffs: string[] = [];
  for (const k of [...new Set([...expected.keys(), ...actual.keys()])].sort()) {
    const x = JSON.stringify(expected.get(k));
    const y = JSON.stringify(actual.get(k));
    if (x !== y) diffs.push(`${k}\n    backed up: ${x ?? '(absent)'}\n    restored:  ${y ?? '(absent)'}`);
  }
  return diffs;
}

/**
 * Holdfast bugs the trials found, each with what identifies it. A trial that fails only with one
 * of these is reported by that bug's own `todo` test, so the other trials keep guarding.
 */
// Bugs this harness found and that are not fixed yet, by name: none now. (Fixed: an init that died
// between its key file and the key's catalog copy left a half pair check reported forever; init
// now removes half pairs before writing its key.)
const KNOWN_BUGS: Record<string, string> = {};
type KnownBug = string;

class KnownBugError extends Error {
  constructor(
    readonly bug: KnownBug,
    message: string,
  ) {
    super(message);
  }
}

interface TrialSpec {
  index: number;
  mode: PowerLossMode;
  seed: number;
  /** null: no crash point; the power goes out when the sequence is over. */
  crashAfter: number | null;
}

interface TrialOutcome {
  spec: TrialSpec;
  /** Where the crash was: the step and operation, or 'idle'. */
  where: string;
  acked: number;
  restored: number;
  ms: number;
}

/**
 * One trial: the sequence on a power-loss mount with the crash point, the reboot, and the checks on
 * the rebooted repository. Throws with the whole scenario on a violation.
 */
async function runTrial(work: string, spec: TrialSpec): Promise<TrialOutcome & { seq: Sequence; lastMutations: number }> {
  const started = Date.now();
  const ws = path.join(work, `trial-${spec.index}`);
  fs.mkdirSync(ws);
  const pl = await mountPowerLoss({ mode: spec.mode, seed: spec.seed, crashAfter: spec.crashAfter });
  const imageDir = path.join(ws, 'image');
  let seq: Sequence;
  let where: string;
  let ops: PowerLossOp[];
  let report: MaterialiseReport;
  let lost: string[];
  try {
    try {
      seq = await runSequence(ws, path.join(pl.mountpoint, 'repo'), pl);
    } catch (e) {
      throw new Error(`trial ${spec.index} (mode ${spec.mode}, seed ${spec.seed}, crash after ${String(spec.crashAfter)}): ${(e as Error).message}`, { cause: e });
    }
    const lastGroup = seq.runs.at(-1)!.group;
    const during = seq.runs.filter((r) => r.group === lastGroup).map((r) => r.step).join(' ∥ ');
    const idle = !pl.crashed();
    report = pl.materialise(imageDir); // crashes now if the crash point was not reached
    ops = pl.ops();
    const crashOp = ops.find((o) => o.crash);
    const prev = ops.filter((o) => !o.crash).at(-1);
    lost = treeDiff(pl.backing, imageDir, 15); // what the power loss took, for the messages
    const torn = report.torn.length > 0 ? `; torn: ${report.torn.join(', ')}` : '';
    where = (idle ? 'idle, after the last step' : `${during}, at mutation ${report.image.mutations + 1} (${report.image.op}${crashOp?.path ? ` ${crashOp.path}` : ''}; the last one done: ${prev ? `${prev.op} ${prev.path ?? ''}${prev.path2 ? ` → ${prev.path2}` : ''}` : 'none'})`) + torn;
  } finally {
    await pl.unmount();
  }
  const scenario = (): string =>
    `trial ${spec.index}: mode ${spec.mode}, seed ${spec.seed}, crash after ${String(spec.crashAfter)} mutations: ${where}` +
    (report.image.tear ? `; torn: ${report.torn.join(', ') || '(not reachable)'} cut at ${report.image.tear.cut} of ${report.image.tear.offset}+${report.image.tear.length}` : '') +
    `\nsteps: ${seq.runs.map((r) => `${r.step} → ${r.run.signal ?? r.run.status}${r.run.crashed ? ' (crashed)' : ''}`).join(', ')}` +
    `\nlast operations:\n${ops
      .slice(-12)
      .map((o) => `  ${o.n} ${o.op} ${o.path ?? ''}${o.path2 ? ` → ${o.path2}` : ''}${o.err ? ` [${o.err}]` : ''}${o.crash ? ' ← crash' : ''}`)
      .join('\n')}` +
    `\nlost (live at the crash → after the reboot):\n  ${lost.join('\n  ') || '(nothing)'}`;
  const fail = (msg: string): never => assert.fail(`${scenario()}\n${msg}`);

  // -- the rebooted repository, a plain directory
  const repo = path.join(imageDir, 'repo');
  const env = { ...seq.env, HOLDFAST_REPO: repo };
  const initAcked = seq.runs[0]?.run.status === 0;
  const reinit = !fs.existsSync(path.join(repo, 'config'));
  if (reinit) {
    if (initAcked) fail('init had exited 0, but the rebooted repository has no config');
    // Never created (init did not report success): create it, as its user would.
    const r = await runCli(['init', '--kdf-cost', TEST_KDF], env);
    if (r.status !== 0) fail(`init again on the rebooted directory failed:\n${showRun(r)}`);
  } else {
    const r = await runCli(['check', '--read-data', '--json'], env);
    if (r.status !== 0) fail(`check --read-data on the rebooted repository failed:\n${showRun(r)}`);
  }

  // Every snapshot in the image restores to what its backup read; every acknowledged one is there.
  const snapDir = path.join(repo, 'snapshots');
  const present = fs.existsSync(snapDir) ? fs.readdirSync(snapDir).filter((n) => /^[0-9a-f]{64}$/.test(n)) : [];
  const stepOf = new Map<string, Step>();
  let acked = 0;
  const forgotten = seq.runs.some((r) => r.step === 'forget 1'); // begun: backup 1's snapshot may be gone
  for (const { step } of seq.runs) {
    const id = step.startsWith('backup') ? snapshotOf(seq, step) : undefined;
    if (id === undefined) continue;
    stepOf.set(id, step);
    if (step === 'backup 1' && forgotten) continue;
    acked++;
    if (!present.includes(id)) fail(`${step} had exited 0 with snapshot ${id}, which the rebooted repository lacks`);
  }
  const crashedBackup = seq.runs.find((r) => r.run.crashed && r.step.startsWith('backup'))?.step;
  let restored = 0;
  for (const id of present) {
    const step = stepOf.get(id) ?? crashedBackup;
    if (step === undefined) fail(`snapshot ${id} in the rebooted repository was written by no backup of this trial`);
    const target = path.join(ws, `restore-${id.slice(0, 8)}`);
    const r = await runCli(['restore', id, '--target', target], env);
    if (r.status !== 0) fail(`restore of ${id} (${step}) failed:\n${showRun(r)}`);
    const diffs = compareTrees(seq.expected.get(step!)!, await describeTree(restoredPath(target, seq.src)));
    if (diffs.length > 0) fail(`snapshot ${id} (${step}) restores differently:\n${diffs.slice(0, 10).join('\n')}`);
    restored++;
  }

  // PostgreSQL retries the WAL it was not told was archived, and may retry what it was told: both
  // succeed. A push that had exited 0 finds its file there with identical bytes (`duplicate`);
  // one that met the crash finds it identical or not at all (a different one is WAL_CONFLICT).
  for (const { step, run } of seq.runs) {
    const segment = seq.segments.get(step);
    if (segment === undefined) continue;
    const r = await runCli(['pg', 'archive-push', '--json', '--cluster', CLUSTER, segment], env);
    if (r.status !== 0) fail(`${step} again on the rebooted repository failed:\n${showRun(r)}`);
    const { duplicate } = JSON.parse(r.stdout) as { duplicate: boolean };
    if (run.status === 0) {
      if (!duplicate) fail(`${step} had exited 0, but ${path.basename(segment)} was missing from the rebooted repository:\n${showRun(r)}`);
      acked++;
    }
  }

  // Carry on without manual steps: the next backup (and prune, if one met the crash), then the checker.
  const next = await runCli(['backup', '--json', ...BACKUP_OPTS, seq.src], env);
  if (next.status !== 0) fail(`the next backup on the rebooted repository failed:\n${showRun(next)}`);
  if (seq.runs.some((r) => r.step === 'prune')) {
    // "Killed at any point, it leaves a consistent repository and the next prune completes the work."
    const again = await runCli(['prune', '--max-unused', '0'], env);
    if (again.status !== 0) fail(`prune again on the rebooted repository failed:\n${showRun(again)}`);
  }
  const check = await runCli(['check', '--json'], env);
  if (check.status !== 0) {
    const msg = `check after the next backup failed:\n${showRun(check)}`;
    fail(msg);
  }
  fs.rmSync(ws, { recursive: true, force: true });
  return { spec, where, acked, restored, ms: Date.now() - started, seq, lastMutations: seq.runs.at(-1)?.mutations ?? 0 };
}

/** Run `jobs` at a time; every result or the first error, once all have settled. */
async function pool<T, R>(items: readonly T[], jobs: number, fn: (item: T) => Promise<R>): Promise<Array<PromiseSettledResult<R>>> {
  const out: Array<PromiseSettledResult<R>> = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!) };
      } catch (e) {
        out[i] = { status: 'rejected', reason: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker));
  return out;
}

describe('holdfast on a disk that loses power', { skip: SKIP || (!fs.existsSync(CLI) && 'the bundled CLI is missing: run npm run build'), timeout: 900_000 }, () => {
  const TRIALS = envInt('HOLDFAST_POWERLOSS_TRIALS', 20, 0, 100_000);
  const SEED = envInt('HOLDFAST_POWERLOSS_SEED', 20261121, 0, 2 ** 31);
  const JOBS = envInt('HOLDFAST_POWERLOSS_JOBS', 2, 1, 16);
  const known = new Map<KnownBug, string[]>(Object.keys(KNOWN_BUGS).map((k) => [k as KnownBug, []]));
  let work: string;
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-powerloss-'));
  });
  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it(`keeps every acknowledged snapshot and WAL file, and a consistent repository, at ${TRIALS} seeded crash points`, async (t) => {
    // Calibration: the whole sequence, the power lost only when it is over; how many mutations it makes.
    const calib = await runTrial(work, { index: 0, mode: 'discard', seed: SEED, crashAfter: null });
    const total = calib.lastMutations;
    const bounds = GROUPS.map((steps, g) => `${steps.join(' ∥ ')} ≤ ${calib.seq.runs.find((r) => r.group === g)?.mutations ?? '?'}`).join(', ');
    t.diagnostic(`calibration: ${total} mutating operations (${bounds}); ${calib.acked} acknowledged (1 snapshot, 2 WAL segments), ${calib.restored} restored; ${calib.ms} ms`);
    assert.equal(calib.acked, 3, 'one snapshot (the first was forgotten) and two WAL segments');
    assert.ok(total > 50, `only ${total} mutations: is the repository really on the mount?`);

    // Crash points spread over the sequence (stratified: one in each of TRIALS equal slices).
    const rng = new Rng(SEED);
    const specs: TrialSpec[] = Array.from({ length: TRIALS }, (_, i) => ({
      index: i + 1,
      mode: i % 2 === 0 ? 'discard' : 'tear',
      seed: SEED + i + 1,
      crashAfter: Math.floor(((i + rng.int(1_000_000) / 1_000_000) * total) / TRIALS),
    }));
    const started = Date.now();
    const results = await pool(specs, JOBS, (spec) => runTrial(work, spec));
    const failures: string[] = [];
    for (const [i, r] of results.entries()) {
      if (r.status === 'fulfilled') {
        const o = r.value;
        t.diagnostic(`trial ${o.spec.index} (${o.spec.mode}, crash after ${String(o.spec.crashAfter)}): ${o.where}; ${o.acked} acknowledged, ${o.restored} restored; ${o.ms} ms`);
      } else if (r.reason instanceof KnownBugError) {
        known.get(r.reason.bug)!.push(r.reason.message);
        t.diagnostic(`trial ${specs[i]!.index}: known bug ${r.reason.bug} (see its todo test)`);
      } else {
        failures.push(r.reason instanceof Error ? r.reason.message : `trial ${specs[i]!.index}: ${String(r.reason)}`);
      }
    }
    t.diagnostic(`${TRIALS} trials in ${Date.now() - started} ms (${JOBS} at a time)`);
    assert.equal(failures.length, 0, `${failures.length} of ${TRIALS} trials failed:\n\n${failures.join('\n\n')}`);
  });

  for (const [bug, explanation] of Object.entries(KNOWN_BUGS)) {
    it(`meets no known bug: ${bug}`, { todo: explanation }, () => {
      const hits = known.get(bug as KnownBug)!;
      assert.equal(hits.length, 0, `${hits.length} trial(s):\n\n${hits.join('\n\n')}`);
    });
  }
});

describe('the local driver after a killed writer, then a power loss', { skip: SKIP || (!fs.existsSync(CLI) && 'the bundled CLI is missing: run npm run build'), timeout: 120_000 }, () => {
  let work: string;
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-powerloss-kill-'));
  });
  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it(
    'keeps a backup whose packs went into data/xx directories that an earlier, killed process had created',
    // Was a durability bug (fixed): ensureDir trusted an existing directory to be durable in its
    // parent, but the process that made it may have died between mkdir and the parent's fsync.
    async () => {
      const pl = await mountPowerLoss({ mode: 'discard', seed: 1 });
      const ws = path.join(work, 'ws');
      const imageDir = path.join(ws, 'image');
      const src = path.join(ws, 'src');
      fs.mkdirSync(ws);
      await makeSource(src);
      const repo = path.join(pl.mountpoint, 'repo');
      const env = { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_LOCK_DIR: path.join(ws, 'locks') };
      let id: string;
      try {
        const init = await runCli(['init', '--kdf-cost', TEST_KDF], env, pl);
        assert.equal(init.status, 0, showRun(init));
        // What earlier backups left when they were killed inside ensureDir, between its mkdir of
        // data/xx and its fsync of data/ (SIGKILL, OOM, a reboot of the container; no power
        // loss): the directories exist, their names are not durable. All 256 of them here, so
        // that every pack of the next backup lands in one.
        fs.mkdirSync(path.join(repo, 'data'));
        fsyncPath(repo);
        for (let i = 0; i < 256; i++) fs.mkdirSync(path.join(repo, 'data', i.toString(16).padStart(2, '0')));
        const backup = await runCli(['backup', '--json', src], env, pl);
        assert.equal(backup.status, 0, showRun(backup));
        id = (JSON.parse(backup.stdout) as { snapshot: string }).snapshot;
        pl.materialise(imageDir); // the power goes out after the backup reported success
      } finally {
        await pl.unmount();
      }
      const imageEnv = { ...env, HOLDFAST_REPO: path.join(imageDir, 'repo') };
      const packDirs = fs.readdirSync(path.join(imageDir, 'repo', 'data'));
      const check = await runCli(['check', '--read-data'], imageEnv);
      assert.equal(check.status, 0, `${showRun(check)}\n(data/ in the rebooted repository holds ${packDirs.length} directories)`);
      const target = path.join(ws, 'restore');
      const restore = await runCli(['restore', id, '--target', target], imageEnv);
      assert.equal(restore.status, 0, showRun(restore));
      assert.deepEqual(compareTrees(await describeTree(src), await describeTree(restoredPath(target, src))), []);
    },
  );

  it('syncTree without the sync command fsyncs every file and directory below its directory; syncfs is not trusted on FUSE', async () => {
    const pl = await mountPowerLoss({ mode: 'discard', seed: 4 });
    const image = path.join(work, 'image-synctree');
    const dir = path.join(pl.mountpoint, 'a');
    const savedPath = process.env['PATH'];
    try {
      assert.equal(await syncfsCovers(pl.mountpoint), false, 'FUSE: fsync file by file');
      fs.mkdirSync(path.join(dir, 'b', 'c'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'one'), 'one');
      fs.writeFileSync(path.join(dir, 'b', 'c', 'two'), 'two');
      fsyncPath(pl.mountpoint); // the entry of a/ itself is the caller's business
      process.env['PATH'] = '/nonexistent'; // no `sync` command: the walk
      await syncTree(dir);
    } finally {
      process.env['PATH'] = savedPath;
      try {
        pl.materialise(image);
      } finally {
        await pl.unmount();
      }
    }
    assert.equal(fs.readFileSync(path.join(image, 'a', 'one'), 'utf8'), 'one');
    assert.equal(fs.readFileSync(path.join(image, 'a', 'b', 'c', 'two'), 'utf8'), 'two');
    assert.equal(await syncfsCovers(os.tmpdir()), ['ext2/3/4', 'xfs', 'btrfs', 'f2fs'].includes(fsTypeName(os.tmpdir())), 'a local block file system: one syncfs');
  });

  it('a restore that reported success survives a power loss (main thread and worker threads); with --no-sync it may not', async () => {
    const ws = path.join(work, 'ws-restore');
    fs.mkdirSync(ws);
    const small = path.join(ws, 'small'); // below the worker threshold: the main thread writes
    const many = path.join(ws, 'many'); // 70 files: worker threads write
    await makeSource(small);
    await generateTree(many, { seed: 77, smallFiles: 70, symlinks: true });
    const env = { HOLDFAST_REPO: path.join(ws, 'repo'), HOLDFAST_PASSWORD: PASSWORD, HOLDFAST_LOCK_DIR: path.join(ws, 'locks') };
    assert.equal((await runCli(['init', '--kdf-cost', TEST_KDF], env)).status, 0);
    const ids = new Map<string, string>();
    for (const src of [small, many]) {
      const b = await runCli(['backup', '--json', src], env);
      assert.equal(b.status, 0, showRun(b));
      ids.set(src, (JSON.parse(b.stdout) as { snapshot: string }).snapshot);
    }
    for (const sync of [true, false]) {
      const pl = await mountPowerLoss({ mode: 'discard', seed: 3 });
      const image = path.join(ws, `image-${sync}`);
      try {
        for (const [src, id] of ids) {
          const args = ['restore', id, '--target', path.join(pl.mountpoint, 'deep', 'new', path.basename(src)), ...(sync ? [] : ['--no-sync'])];
          const r = await runCli(args, env, pl);
          assert.equal(r.status, 0, showRun(r));
        }
        pl.materialise(image); // the power goes out once both restores reported success
      } finally {
        await pl.unmount();
      }
      for (const src of [small, many]) {
        const restored = path.join(image, 'deep', 'new', path.basename(src));
        // The image models names and contents, not times (see powerloss.ts): compare without them.
        const untimed = async (dir: string): Promise<Map<string, TreeEntry>> => new Map([...(await describeTree(dir))].map(([k, e]) => [k, { ...e, mtimeMs: 0 }]));
        const diff = fs.existsSync(restored) ? compareTrees(await untimed(src), await untimed(restoredPath(restored, src))) : ['the target itself is gone'];
        if (sync) assert.deepEqual(diff, [], `${path.basename(src)}: what the restore wrote is on the disk after the power loss`);
        else assert.notDeepEqual(diff, [], `${path.basename(src)}: without fsync the power loss takes the restored files (so this test sees the difference)`);
      }
    }
  });
});
