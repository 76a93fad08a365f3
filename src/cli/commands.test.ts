/**
 * The everyday commands through the bundled CLI: snapshot selection (`latest`, id prefixes),
 * snapshots/ls/diff/stats output, --tag/--host/--exclude on backup, --include on restore, key
 * management, help and version.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COMMANDS } from './commands.js';
import { OPTIONS, appliesTo } from '../config/options.js';
import type { SnapshotSummary, SnapshotWithId } from '../repository/snapshot.js';
import { ROOT, Rng, cli, cliSpawn } from '../testing/helpers.js';
import { type Env, assertSameTree, dirSize, fails, initRepo, ok, okJson, restoredPath, show, within, workspace } from '../testing/e2e.js';

/** What `snapshots --json` prints: the snapshot manifest with its id. */
type SnapshotJson = SnapshotWithId & { summary: SnapshotSummary };

/** The shortest prefix of `id` that no other id shares. */
function uniquePrefix(id: string, all: readonly string[]): string {
  for (let n = 1; n <= id.length; n++) {
    const p = id.slice(0, n);
    if (all.filter((x) => x.startsWith(p)).length === 1) return p;
  }
  return id;
}

function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

describe('snapshots, ls, restore selection, diff and stats', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let src: string;
  let repo: string;
  let env: Env;
  const ids: string[] = [];
  const original = new Map<string, Buffer>();
  const rng = new Rng(9001);

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-cmd-'));
    src = path.join(dir, 'src');
    repo = path.join(dir, 'repo');
    const files: Record<string, Buffer> = {
      'keep.txt': rng.text(200_000),
      'change.txt': rng.text(5000),
      'remove.txt': rng.bytes(3000),
      'with space.txt': rng.bytes(10),
      'junk.tmp': rng.bytes(100),
      'sub/deep.bin': rng.bytes(300_000),
      'sub/also.tmp': rng.bytes(50),
      'sub/inner/x.txt': rng.text(1000),
      'sub/inner/y.txt': rng.text(1000),
      'cache/blob': rng.bytes(4000),
    };
    for (const [rel, data] of Object.entries(files)) {
      await fsp.mkdir(path.dirname(path.join(src, rel)), { recursive: true });
      await fsp.writeFile(path.join(src, rel), data);
      original.set(rel, data);
    }
    await fsp.chmod(path.join(src, 'keep.txt'), 0o644);
    await fsp.symlink('sub/deep.bin', path.join(src, 'link'));
    env = initRepo(repo);

    const backup = (...args: string[]): string => okJson<{ snapshot: string }>(['backup', src, ...args], env).snapshot;
    ids.push(backup('--tag', 'nightly', '--tag', 'weekly', '--host', 'alpha'));
    // Between snapshots 1 and 2: modify, remove, add (a file and a directory).
    await fsp.writeFile(path.join(src, 'change.txt'), rng.text(5000));
    await fsp.rm(path.join(src, 'remove.txt'));
    await fsp.writeFile(path.join(src, 'added.txt'), rng.bytes(777));
    await fsp.mkdir(path.join(src, 'sub/new dir'));
    await fsp.writeFile(path.join(src, 'sub/new dir/file'), rng.bytes(10));
    await fsp.chmod(path.join(src, 'with space.txt'), 0o600); // metadata only
    ids.push(backup('--host', 'alpha'));
    ids.push(backup('--host', 'beta', '--tag', 'adhoc', '--exclude', '*.tmp', '--exclude', `${src}/cache`, '--exclude', 'inner/x.txt'));
  });
  after(() => cleanup());

  test('snapshots --json lists every snapshot, oldest first, with its fields', () => {
    const list = okJson<SnapshotJson[]>(['snapshots'], env);
    assert.deepEqual(
      list.map((s) => s.id),
      ids,
    );
    for (const s of list) {
      assert.match(s.id, /^[0-9a-f]{64}$/);
      assert.match(s.tree, /^[0-9a-f]{64}$/);
      assert.ok(!Number.isNaN(Date.parse(s.time)), `time ${s.time}`);
      assert.deepEqual(s.paths, [src]);
      assert.match(s.program, /^holdfast /);
      assert.equal(typeof s.username, 'string');
      assert.equal(typeof s.summary.files, 'number');
    }
    assert.deepEqual(
      list.map((s) => [s.host, s.tags]),
      [
        ['alpha', ['nightly', 'weekly']],
        ['alpha', []],
        ['beta', ['adhoc']],
      ],
    );
    assert.deepEqual(list[2]!.excludes, ['*.tmp', `${src}/cache`, 'inner/x.txt']);
    // The parent is the latest snapshot of the same host and paths.
    assert.equal(list[1]!.parent, ids[0]);
    assert.equal(list[2]!.parent, undefined);
    assert.equal(list[1]!.summary.filesChanged, 2); // change.txt, and the chmod'ed file is read again
    assert.equal(list[1]!.summary.filesNew, 2);

    const only = (...args: string[]): string[] => okJson<SnapshotJson[]>(['snapshots', ...args], env).map((s) => s.id);
    assert.deepEqual(only('--host', 'beta'), [ids[2]]);
    assert.deepEqual(only('--host', 'alpha'), [ids[0], ids[1]]);
    assert.deepEqual(only('--tag', 'nightly'), [ids[0]]);
    assert.deepEqual(only('--tag', 'nightly', '--tag', 'weekly'), [ids[0]]);
    assert.deepEqual(only('--tag', 'nightly', '--tag', 'adhoc'), []);
    assert.deepEqual(only('--host', 'gamma'), []);

    const text = ok(['snapshots'], env).stdout;
    for (const id of ids) assert.ok(text.includes(id.slice(0, 8)), `text listing lacks ${id.slice(0, 8)}\n${text}`);
    assert.match(text, /^3 snapshots$/m);
  });

  test('ls takes latest and unique id prefixes, and a path below which to list', () => {
    const latest = lines(ok(['ls', 'latest'], env).stdout);
    assert.ok(latest.includes(`${src}/keep.txt`), latest.join('\n'));
    assert.ok(latest.includes(`${src}/with space.txt`));
    assert.ok(latest.includes(`${src}/sub/new dir/file`));
    // Excluded in snapshot 3: *.tmp at any depth, the absolute cache path, the relative inner/x.txt.
    for (const gone of ['junk.tmp', 'sub/also.tmp', 'cache', 'cache/blob', 'sub/inner/x.txt']) assert.ok(!latest.includes(`${src}/${gone}`), `${gone} should be excluded`);
    assert.ok(latest.includes(`${src}/sub/inner/y.txt`));

    const prefix = uniquePrefix(ids[0]!, ids);
    const first = lines(ok(['ls', prefix], env).stdout);
    for (const p of ['remove.txt', 'junk.tmp', 'cache/blob', 'sub/also.tmp']) assert.ok(first.includes(`${src}/${p}`), `${p} missing from ls ${prefix}`);
    assert.ok(!first.includes(`${src}/added.txt`));
    assert.deepEqual(lines(ok(['ls', ids[0]!.slice(0, 12)], env).stdout), first);

    const sub = lines(ok(['ls', prefix, `${src}/sub`], env).stdout);
    assert.ok(sub.length >= 4);
    for (const l of sub) assert.ok(l === `${src}/sub` || l.startsWith(`${src}/sub/`), `ls below sub printed ${l}`);
    assert.ok(sub.includes(`${src}/sub/deep.bin`));

    const json = lines(ok(['ls', 'latest', '--json'], env).stdout).map((l) => JSON.parse(l) as { path: string; type: string; mode: number; size: number; target?: string });
    const keep = json.find((e) => e.path === `${src}/keep.txt`);
    assert.deepEqual([keep?.type, keep?.mode, keep?.size], ['file', 0o644, 200_000]);
    assert.equal(json.find((e) => e.path === `${src}/link`)?.target, 'sub/deep.bin');

    const long = ok(['ls', 'latest', '--long'], env).stdout;
    assert.match(long, new RegExp(`^-rw-r--r-- .* 200000 .* ${src}/keep\\.txt$`, 'm'));
    assert.match(long, new RegExp(`^l.* ${src}/link -> sub/deep\\.bin$`, 'm'));
  });

  test('restore takes latest and id prefixes, and --include selects paths', async () => {
    const t1 = path.join(dir, 'r-prefix');
    ok(['restore', uniquePrefix(ids[0]!, ids), '--target', t1], env);
    const out1 = restoredPath(t1, src);
    for (const rel of ['remove.txt', 'change.txt', 'junk.tmp', 'cache/blob']) {
      assert.ok(fs.readFileSync(path.join(out1, rel)).equals(original.get(rel)!), `${rel} of snapshot 1 restored wrong`);
    }
    assert.ok(!fs.existsSync(path.join(out1, 'added.txt')));

    const t2 = path.join(dir, 'r-latest');
    ok(['restore', 'latest', '--target', t2], env);
    const out2 = restoredPath(t2, src);
    assert.ok(fs.existsSync(path.join(out2, 'added.txt')));
    assert.ok(!fs.existsSync(path.join(out2, 'junk.tmp')));
    assert.ok(!fs.existsSync(path.join(out2, 'cache')));

    const t3 = path.join(dir, 'r-include');
    ok(['restore', ids[1]!.slice(0, 10), '--target', t3, '--include', `${src}/sub`], env);
    assert.deepEqual(fs.readdirSync(restoredPath(t3, src)), ['sub']);
    await assertSameTree(path.join(src, 'sub'), path.join(restoredPath(t3, src), 'sub'));

    const t4 = path.join(dir, 'r-include-2');
    ok(['restore', 'latest', '--target', t4, '--include', `${src}/keep.txt`, '-i', `${src}/sub/inner/y.txt`], env);
    assert.deepEqual(fs.readdirSync(restoredPath(t4, src)).sort(), ['keep.txt', 'sub']);
    assert.deepEqual(fs.readdirSync(path.join(restoredPath(t4, src), 'sub')), ['inner']);
    assert.deepEqual(fs.readdirSync(path.join(restoredPath(t4, src), 'sub/inner')), ['y.txt']);
    assert.ok(fs.readFileSync(path.join(restoredPath(t4, src), 'keep.txt')).equals(original.get('keep.txt')!));

    fails(['restore', 'latest', '--target', path.join(dir, 'r-none'), '--include', `${src}/no such file`], env, 17, 'SNAPSHOT_NOT_FOUND');
  });

  test('diff shows added, removed and modified paths', () => {
    const d = lines(ok(['diff', ids[0]!, ids[1]!], env).stdout);
    const changes = d.filter((l) => /^[+\-MT] /.test(l)).sort();
    assert.deepEqual(changes, [
      `+  ${src}/added.txt`,
      `+  ${src}/sub/new dir/`,
      `+  ${src}/sub/new dir/file`,
      `-  ${src}/remove.txt`,
      `M  ${src}/change.txt`,
    ].sort());
    for (const l of d) assert.match(l, /^[+\-MTU]  \//, `unexpected diff line ${JSON.stringify(l)}`);
    assert.ok(d.includes(`U  ${src}/with space.txt`), `a chmod shows as U:\n${d.join('\n')}`);
    assert.ok(!d.some((l) => l.endsWith('/keep.txt')), 'an untouched file must not be listed');

    const back = lines(ok(['diff', uniquePrefix(ids[1]!, ids), uniquePrefix(ids[0]!, ids)], env).stdout).filter((l) => /^[+\-M] /.test(l));
    assert.ok(back.includes(`-  ${src}/added.txt`) && back.includes(`+  ${src}/remove.txt`) && back.includes(`M  ${src}/change.txt`), back.join('\n'));

    const excluded = lines(ok(['diff', ids[1]!, 'latest', '--json'], env).stdout).map((l) => JSON.parse(l) as { kind: string; path: string; type: string });
    const removed = excluded.filter((c) => c.kind === '-').map((c) => c.path).sort();
    assert.deepEqual(removed, [`${src}/cache`, `${src}/cache/blob`, `${src}/junk.tmp`, `${src}/sub/also.tmp`, `${src}/sub/inner/x.txt`]);
    assert.equal(excluded.find((c) => c.path === `${src}/cache`)?.type, 'dir');

    assert.deepEqual(lines(ok(['diff', 'latest', 'latest'], env).stdout), []);
  });

  test('stats --json reports sizes that agree with the snapshots and the disk', () => {
    const s = okJson<{ snapshots: number; restoreSize: number; files: number; blobs: number; rawSize: number; storedSize: number; packs: number; dedupRatio: number; compressionRatio: number }>(['stats'], env);
    const list = okJson<SnapshotJson[]>(['snapshots'], env);
    assert.equal(s.snapshots, 3);
    assert.equal(s.restoreSize, list.reduce((n, x) => n + x.summary.bytes, 0));
    assert.equal(s.files, list.reduce((n, x) => n + x.summary.files, 0));
    assert.equal(s.storedSize, dirSize(repo));
    assert.ok(s.blobs > 0 && s.packs > 0 && s.rawSize > 0);
    assert.ok(s.dedupRatio > 2, `dedup ratio ${s.dedupRatio} for three nearly identical snapshots`);
    assert.ok(s.compressionRatio > 1.2, `compression ratio ${s.compressionRatio} with 200 kB of text`);
    const text = ok(['stats'], env).stdout;
    assert.match(text, /^snapshots: +3$/m);
    assert.match(text, /^dedup ratio: +\d+\.\d\dx$/m);
    ok(['check', '--read-data'], env);
  });
});

describe('snapshot ids and backup paths', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let env: Env;
  let src: string;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-ids-'));
    src = path.join(dir, 'src');
    const rng = new Rng(606);
    await fsp.mkdir(path.join(src, 'one/deeper'), { recursive: true });
    await fsp.mkdir(path.join(src, 'two'));
    await fsp.writeFile(path.join(src, 'one/deeper/f'), rng.bytes(2000));
    await fsp.writeFile(path.join(src, 'two/g'), rng.bytes(2000));
    await fsp.writeFile(path.join(src, 'top'), rng.bytes(2000));
    env = initRepo(path.join(dir, 'repo'));
  });
  after(() => cleanup());

  test('several paths and single files are backed up and restored under their absolute paths', async () => {
    const single = okJson<{ snapshot: string }>(['backup', path.join(src, 'top')], env).snapshot;
    const t1 = path.join(dir, 'r-single');
    ok(['restore', single, '--target', t1], env);
    assert.ok(fs.readFileSync(restoredPath(t1, path.join(src, 'top'))).equals(fs.readFileSync(path.join(src, 'top'))));
    assert.deepEqual(fs.readdirSync(restoredPath(t1, src)), ['top']);

    // Given out of order, with a duplicate and a relative spelling.
    const rel = path.relative(process.cwd(), path.join(src, 'one/deeper'));
    const multi = okJson<{ snapshot: string }>(['backup', path.join(src, 'two'), rel, path.join(src, 'two')], env).snapshot;
    const list = okJson<Array<{ id: string; paths: string[] }>>(['snapshots'], env);
    assert.deepEqual(list.find((s) => s.id === multi)?.paths, [path.join(src, 'one/deeper'), path.join(src, 'two')]);
    const t2 = path.join(dir, 'r-multi');
    ok(['restore', multi, '--target', t2], env);
    assert.deepEqual(fs.readdirSync(restoredPath(t2, src)).sort(), ['one', 'two']);
    await assertSameTree(path.join(src, 'one'), path.join(restoredPath(t2, src), 'one'));
    await assertSameTree(path.join(src, 'two'), path.join(restoredPath(t2, src), 'two'));
    ok(['check'], env);
  });

  test('a reader that stops early (ls | head) ends ls quietly', async () => {
    const many = path.join(dir, 'many files with rather long names to fill the pipe');
    await fsp.mkdir(many);
    for (let i = 0; i < 2000; i++) await fsp.writeFile(path.join(many, `file number ${i} of the listing`), '');
    const snap = okJson<{ snapshot: string }>(['backup', many], env).snapshot;
    const child = cliSpawn(['ls', snap], env);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Close our end after the first chunk; about 200 kB more are still to be written.
    await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
    child.stdout?.destroy();
    const code = await within(exited, 30_000);
    if (code === undefined) child.kill('SIGKILL');
    assert.equal(code, 141, `exit ${String(code)}\n${stderr}`);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled|at /, stderr);
  });

  test('an ambiguous id prefix is refused; a unique one works', async () => {
    // 17 snapshots: by the pigeonhole principle two share their first hex digit.
    for (let i = 0; i < 15; i++) ok(['backup', path.join(src, 'top'), '--tag', `n${i}`], env);
    const ids = okJson<Array<{ id: string }>>(['snapshots'], env).map((s) => s.id);
    assert.ok(ids.length >= 17, `${ids.length} snapshots`);
    const shared = [...'0123456789abcdef'].find((c) => ids.filter((id) => id.startsWith(c)).length >= 2)!;
    fails(['ls', shared], env, 17, 'SNAPSHOT_NOT_FOUND', 'ambiguous');
    fails(['restore', shared, '--target', path.join(dir, 'never')], env, 17, 'SNAPSHOT_NOT_FOUND', 'ambiguous');
    assert.ok(!fs.existsSync(path.join(dir, 'never')));
    const target = ids.find((id) => id.startsWith(shared))!;
    ok(['ls', uniquePrefix(target, ids)], env);
    ok(['ls', target], env);
  });
});

describe('keys', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let env: Env;
  let src: string;
  const pw = (p: string): Env => ({ ...env, HOLDFAST_PASSWORD: p });
  type KeyJson = Array<{ id: string; current: boolean; kdf?: string; created?: string }>;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-key-'));
    src = path.join(dir, 'src');
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, 'f'), new Rng(5).bytes(50_000));
    env = initRepo(path.join(dir, 'repo'), 'first');
    ok(['backup', src], env);
  });
  after(() => cleanup());

  test('key add, list, remove and passwd', async () => {
    let keys = okJson<KeyJson>(['key', 'list'], env);
    assert.equal(keys.length, 1);
    assert.equal(keys[0]!.current, true);
    assert.match(keys[0]!.kdf ?? '', /^scrypt N=1024 /);
    const firstKey = keys[0]!.id;

    const added = ok(['key', 'add', '--kdf-cost', '10'], { ...env, HOLDFAST_NEW_PASSWORD: 'second' });
    assert.match(added.stdout, /^added key [0-9a-f]{8}$/m);
    const pwFile = path.join(dir, 'third.pw');
    await fsp.writeFile(pwFile, 'third\n');
    ok(['key', 'add', '--kdf-cost', '10', '--new-password-file', pwFile], env);
    keys = okJson<KeyJson>(['key', 'list'], pw('second'));
    assert.equal(keys.length, 3);
    const secondKey = keys.find((k) => k.current)!.id;
    assert.notEqual(secondKey, firstKey);
    ok(['snapshots'], pw('third'));

    // The key in use cannot be removed; another can, and its password stops working.
    fails(['key', 'remove', firstKey.slice(0, 8)], env, 24, 'KEY_IN_USE');
    fails(['key', 'remove', 'ffffffffffff'], env, 15, 'OBJECT_MISSING');
    const removed = ok(['key', 'remove', secondKey.slice(0, 8)], env);
    assert.match(removed.stdout, new RegExp(`removed key ${secondKey.slice(0, 8)}`));
    fails(['snapshots'], pw('second'), 12, 'WRONG_PASSWORD');

    const changed = ok(['key', 'passwd', '--kdf-cost', '10'], { ...env, HOLDFAST_NEW_PASSWORD: 'fourth' });
    assert.match(changed.stdout, new RegExp(`password changed: added key [0-9a-f]{8}, removed key ${firstKey.slice(0, 8)}`));
    fails(['snapshots'], pw('first'), 12, 'WRONG_PASSWORD');
    ok(['snapshots'], pw('third'));
    keys = okJson<KeyJson>(['key', 'list'], pw('fourth'));
    assert.equal(keys.length, 2);
    assert.ok(!keys.some((k) => k.id === firstKey || k.id === secondKey));

    // The data is still there under the new password.
    const target = path.join(dir, 'out');
    ok(['restore', 'latest', '--target', target], pw('fourth'));
    await assertSameTree(src, restoredPath(target, src));
    ok(['check', '--read-data'], pw('fourth'));
  });

  test('init with the default KDF cost makes a key that opens', async () => {
    const repo = path.join(dir, 'default-kdf');
    const e: Env = { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD: 'default cost' };
    ok(['init'], e);
    const keys = okJson<KeyJson>(['key', 'list'], e);
    assert.match(keys[0]!.kdf ?? '', /^scrypt N=65536 /);
    fails(['snapshots'], { ...e, HOLDFAST_PASSWORD: 'default cosT' }, 12, 'WRONG_PASSWORD');
  });
});

describe('help and version', () => {
  test('--version prints the package version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V', 'version']) {
      const r = cli([flag]);
      assert.equal(r.status, 0, show([flag], r));
      assert.equal(r.stdout, `holdfast ${pkg.version}\n`);
    }
  });

  test('every command has --help, listing the options that apply to it', () => {
    for (const spec of COMMANDS) {
      const args = [...spec.name.split(' '), '--help'];
      const r = cli(args);
      assert.equal(r.status, 0, show(args, r));
      assert.ok(r.stdout.startsWith(`Usage: ${spec.usage}\n`), show(args, r));
      for (const o of OPTIONS) {
        if (!appliesTo(o, spec.name)) continue;
        const shown = o.noFlag ? `HOLDFAST_${o.name.toUpperCase().replace(/-/g, '_')}` : `--${o.name}`;
        assert.ok(r.stdout.includes(shown), `help of ${spec.name} lacks ${shown}`);
      }
      if (spec.name === 'restore' || spec.name === 'key passwd') {
        const viaHelp = cli(['help', ...spec.name.split(' ')]);
        assert.equal(viaHelp.status, 0);
        assert.equal(viaHelp.stdout, r.stdout);
      }
    }
    const general = cli(['--help']);
    assert.equal(general.status, 0);
    for (const spec of COMMANDS) assert.ok(general.stdout.includes(spec.name), `general help lacks ${spec.name}`);
    assert.equal(cli(['help', 'config']).status, 0);
  });

  test('usage errors exit 2', () => {
    const none = cli([]);
    assert.equal(none.status, 2);
    assert.match(none.stdout, /^Usage: holdfast COMMAND/m);
    fails(['frobnicate'], {}, 2, 'USAGE', 'unknown command');
    fails(['key'], {}, 2, 'USAGE', 'needs a subcommand');
    fails(['backup', '--exclud', '*.tmp', '/tmp'], {}, 2, 'USAGE', '--exclude');
    fails(['ls'], {}, 2, 'USAGE');
    fails(['check', '--target', '/tmp'], {}, 2, 'USAGE', 'does not apply');
  });
});
