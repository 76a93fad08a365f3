/**
 * Restore never writes outside its target. Crafted snapshots (written through the library, as an
 * attacker with the key could) hold names with '..', '/', NUL, empty names, and a symlink and a
 * directory of the same name; `holdfast restore` must refuse each with UNSAFE_PATH (exit 18)
 * before writing anything. A legitimate snapshot restored with --force over a target where
 * symlinks lead outside must replace the symlinks, never write through them.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Repository } from '../repository/repository.js';
import { LocalBackend } from '../storage/local.js';
import { saveSnapshot } from '../repository/snapshot.js';
import { type TreeNode, encodeTree } from '../files/tree.js';
import { cli } from '../testing/helpers.js';
import { type Env, expectError, initRepo, listFiles, ok, show, workspace } from '../testing/e2e.js';

const PASSWORD = 'correct horse';
const NS = '1600000000000000000';

function node(name: string, type: TreeNode['type'], extra: Partial<TreeNode> = {}): TreeNode {
  return { name, type, mode: type === 'dir' ? 0o755 : 0o644, mtime: NS, atime: NS, ctime: NS, uid: 0, gid: 0, inode: '1', ...extra };
}

/** Write a snapshot whose trees `build` makes, through the library; returns the snapshot id. */
async function craft(repoDir: string, build: (b: Builder) => Promise<string>): Promise<string> {
  const repo = await Repository.open(new LocalBackend(repoDir), PASSWORD);
  try {
    await repo.loadIndex();
    const b = new Builder(repo);
    const tree = await build(b);
    await repo.flush();
    return await saveSnapshot(repo, { version: 1, time: new Date().toISOString(), host: 'crafted', username: 'mallory', paths: ['/crafted'], tags: [], excludes: [], tree, program: 'test' });
  } finally {
    await repo.close();
  }
}

class Builder {
  constructor(private readonly repo: Repository) {}
  async file(name: string, content: string): Promise<TreeNode> {
    const data = Buffer.from(content);
    const { id } = await this.repo.saveBlob('data', data);
    return node(name, 'file', { content: [id.toString('hex')], size: data.length });
  }
  async tree(nodes: TreeNode[]): Promise<string> {
    const { id } = await this.repo.saveBlob('tree', encodeTree({ nodes }));
    return id.toString('hex');
  }
  async dir(name: string, nodes: TreeNode[]): Promise<TreeNode> {
    return node(name, 'dir', { subtree: await this.tree(nodes) });
  }
  symlink(name: string, target: string): TreeNode {
    return node(name, 'symlink', { target, mode: 0o777 });
  }
}

describe('restore of crafted snapshots', { timeout: 120_000 }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let repo: string;
  let env: Env;
  let outside: string;
  let targets: string;
  let n = 0;

  before(async () => {
    ({ dir, cleanup } = await workspace('holdfast-e2e-unsafe-'));
    repo = path.join(dir, 'repo');
    outside = path.join(dir, 'outside');
    targets = path.join(dir, 'a', 'b');
    await fsp.mkdir(outside);
    await fsp.mkdir(targets, { recursive: true });
    env = initRepo(repo, PASSWORD);
  });
  after(() => cleanup());

  /** Everything in the workspace except the repository: what a restore may have created. */
  function footprint(): string[] {
    return listFiles(dir).filter((f) => !f.startsWith('repo/'));
  }

  /**
   * Restore `snapshot` into a fresh target: it must fail with UNSAFE_PATH, create nothing at all
   * (not even the target), and leave every `escapes` path absent.
   */
  function expectRefused(snapshot: string, escapes: (target: string) => string[], unsafeName: string): void {
    const target = path.join(targets, `t${++n}`);
    const before = footprint();
    const args = ['restore', snapshot, '--target', target];
    const r = cli(args, env);
    expectError(r, args, 18, 'UNSAFE_PATH', JSON.stringify(unsafeName));
    for (const p of escapes(target)) assert.ok(!fs.existsSync(p), `restore created ${p} outside its target\n${show(args, r)}`);
    assert.ok(!fs.existsSync(target), `a refused restore must write nothing, but ${target} exists`);
    assert.deepEqual(footprint(), before, 'the refused restore changed files in the workspace');
    assert.deepEqual(fs.readdirSync(outside), []);
  }

  test("a name '../../escape' is refused", async () => {
    const id = await craft(repo, async (b) => b.tree([await b.file('legit', 'fine'), await b.file('../../escape', 'pwned')]));
    expectRefused(id, (t) => [path.resolve(t, '../../escape')], '../../escape');
    // ls reads the same trees: it refuses too; check reports the tree.
    expectError(cli(['ls', id], env), ['ls'], 18, 'UNSAFE_PATH');
    const c = cli(['check'], env);
    assert.equal(c.status, 23, show(['check'], c));
    assert.match(c.stdout, /unsafe name/);
  });

  test("a directory named '..' is refused", async () => {
    const id = await craft(repo, async (b) => b.tree([await b.dir('..', [await b.file('escape-dotdot', 'pwned')])]));
    expectRefused(id, (t) => [path.resolve(t, '..', 'escape-dotdot')], '..');
  });

  test("names containing '/' are refused, deep in the tree and after legitimate entries", async () => {
    const id = await craft(repo, async (b) =>
      b.tree([
        await b.file('aaa first', 'written first by a naive restorer'),
        await b.dir('d', [await b.dir('e', [await b.file('ok', 'ok'), await b.file('sub/../../../../escape-slash', 'pwned')])]),
      ]),
    );
    expectRefused(id, (t) => [path.resolve(t, 'd/e', 'sub/../../../../escape-slash')], 'sub/../../../../escape-slash');
    const abs = path.join(dir, 'abs-escape');
    const id2 = await craft(repo, async (b) => b.tree([await b.file(abs, 'pwned')]));
    expectRefused(id2, () => [abs], abs);
  });

  test("empty, '.' and NUL-carrying names are refused", async () => {
    for (const bad of ['', '.', 'nul\0name']) {
      const id = await craft(repo, async (b) => b.tree([await b.file(bad, 'pwned')]));
      expectRefused(id, () => [], bad);
    }
  });

  test('a symlink and a directory of the same name (write through the link) are refused', async () => {
    const id = await craft(repo, async (b) => b.tree([b.symlink('link', outside), await b.dir('link', [await b.file('pwned', 'pwned')])]));
    expectRefused(id, () => [path.join(outside, 'pwned')], 'link');
    const id2 = await craft(repo, async (b) => b.tree([await b.dir('d', [b.symlink('x', '../../../outside'), await b.file('x', 'pwned')])]));
    expectRefused(id2, () => [], 'x');
  });

  test('restore --force replaces symlinks in the target that lead outside; it never writes through them', async () => {
    const victim = path.join(outside, 'victim');
    await fsp.writeFile(victim, 'original');
    const id = await craft(repo, async (b) => b.tree([await b.dir('link', [await b.file('pwned', 'inside')]), await b.file('file', 'new content')]));
    const target = path.join(targets, 'forced');
    await fsp.mkdir(target);
    await fsp.symlink(outside, path.join(target, 'link'));
    await fsp.symlink(victim, path.join(target, 'file'));
    fails22(id, target);
    ok(['restore', id, '--target', target, '--force'], env);
    assert.deepEqual(fs.readdirSync(outside), ['victim']);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'original');
    assert.ok(fs.lstatSync(path.join(target, 'link')).isDirectory());
    assert.equal(fs.readFileSync(path.join(target, 'link', 'pwned'), 'utf8'), 'inside');
    assert.ok(fs.lstatSync(path.join(target, 'file')).isFile());
    assert.equal(fs.readFileSync(path.join(target, 'file'), 'utf8'), 'new content');
    await fsp.rm(victim);
  });

  function fails22(id: string, target: string): void {
    const args = ['restore', id, '--target', target];
    expectError(cli(args, env), args, 22, 'TARGET_NOT_EMPTY');
  }
});
