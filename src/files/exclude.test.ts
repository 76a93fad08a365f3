/**
 * Exclude patterns, rule by rule as documented in exclude.ts:
 * - no '/' in the pattern: matches a file or directory name at any depth;
 * - '/' in the pattern: the whole absolute path when it starts with '/', else any trailing run of
 *   whole path components;
 * - '*' within one component, '**' across components, '?' one character, '[abc]' a set.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Excluder, globToRegex } from './exclude.js';

/** Ask the excluder about an absolute path, passing its last component as the name (as the walker does). */
function excluded(ex: Excluder, absPath: string): boolean {
  return ex.excluded(absPath, path.posix.basename(absPath));
}

function check(patterns: readonly string[], yes: readonly string[], no: readonly string[]): void {
  const ex = new Excluder(patterns);
  for (const p of yes) assert.equal(excluded(ex, p), true, `${JSON.stringify(patterns)} should exclude ${p}`);
  for (const p of no) assert.equal(excluded(ex, p), false, `${JSON.stringify(patterns)} should not exclude ${p}`);
}

describe('Excluder', () => {
  test('no patterns, or only empty ones, exclude nothing', () => {
    assert.equal(new Excluder([]).empty, true);
    assert.equal(new Excluder(['']).empty, true);
    assert.equal(new Excluder(['*.tmp']).empty, false);
    check([], [], ['/a', '/a/b.tmp', '/']);
    check([''], [], ['/a', '/a/b.tmp']);
  });

  test('a pattern without "/" matches a name at any depth, and only whole names', () => {
    check(['*.tmp'], ['/x.tmp', '/a/b/c/x.tmp', '/a/.tmp', '/dir.tmp'], ['/x.tmpl', '/x.tmp/child', '/a/xtmp', '/a/x.TMP']);
    check(['.cache'], ['/home/u/.cache', '/.cache', '/a/b/c/.cache'], ['/home/u/.cache2', '/home/u/x.cache', '/home/u/cache']);
    check(['node_modules'], ['/src/app/node_modules'], ['/src/app/node_modules_old', '/src/app/my-node_modules']);
  });

  test('a name pattern is tested against the name argument, a path pattern against the path', () => {
    const byName = new Excluder(['secret']);
    assert.equal(byName.excluded('/some/where/else', 'secret'), true);
    assert.equal(byName.excluded('/some/secret', 'other'), false);
    const byPath = new Excluder(['/some/secret']);
    assert.equal(byPath.excluded('/some/secret', 'other'), true);
    assert.equal(byPath.excluded('/else', 'secret'), false);
  });

  test('a pattern starting with "/" matches the whole absolute path', () => {
    check(['/home/*/.cache'], ['/home/u/.cache', '/home/other user/.cache'], ['/home/u/x/.cache', '/x/home/u/.cache', '/home/.cache', '/home/u/.cache/sub', '/home/u/.cache2']);
    check(['/tmp'], ['/tmp'], ['/tmp2', '/x/tmp', '/tmp/a']);
    check(['/var/lib/postgresql/*/main/pg_wal'], ['/var/lib/postgresql/16/main/pg_wal'], ['/var/lib/postgresql/16/main/pg_wal_old', '/var/lib/postgresql/16/x/main/pg_wal']);
  });

  test('a relative pattern with "/" matches any trailing run of whole components', () => {
    check(['build/output'], ['/build/output', '/src/build/output', '/a/b/build/output'], ['/src/mybuild/output', '/build/output2', '/build/output/file', '/build/x/output']);
    check(['a/*/c'], ['/a/b/c', '/x/a/b/c'], ['/a/b/d/c', '/a/c', '/xa/b/c']);
  });

  test('"*" stays within one component', () => {
    check(['/data/*'], ['/data/a', '/data/.hidden'], ['/data/a/b', '/data']);
    check(['/data/*.log'], ['/data/x.log'], ['/data/sub/x.log']);
  });

  test('"**" crosses components, including none', () => {
    check(['/data/**/tmp'], ['/data/tmp', '/data/a/tmp', '/data/a/b/c/tmp'], ['/data/a/tmpx', '/other/a/tmp', '/data/atmp']);
    check(['/data/**'], ['/data/a', '/data/a/b/c'], ['/other/a']);
    check(['**/cache/*.bin'], ['/cache/x.bin', '/a/b/cache/x.bin'], ['/a/cache/sub/x.bin', '/a/xcache/x.bin']);
  });

  test('"?" matches exactly one character, never "/"', () => {
    check(['file?.txt'], ['/d/file1.txt', '/d/fileX.txt'], ['/d/file.txt', '/d/file12.txt']);
    check(['/a?b'], ['/axb'], ['/a/b', '/ab']);
  });

  test('"[abc]" sets, ranges and "[!…]" negation match one character', () => {
    check(['[abc].dat'], ['/x/a.dat', '/x/c.dat'], ['/x/d.dat', '/x/ab.dat', '/x/.dat']);
    check(['core.[0-9]*'], ['/x/core.1', '/x/core.12345'], ['/x/core.a', '/x/core.']);
    check(['[!.]*.tmp'], ['/x/a.tmp'], ['/x/.a.tmp']);
    check(['/d/x[!y]z'], ['/d/xaz', '/d/x.z'], ['/d/xyz', '/d/xz']);
  });

  test(
    'a set, like "?", matches one character within a component, never "/"',
    () => {
      check(['/d/x[!y]z'], [], ['/d/x/z']);
      check(['/a[/]b'], [], ['/a/b']);
    },
  );

  test('regular-expression characters in patterns are literal', () => {
    check(['a+b.(1)'], ['/x/a+b.(1)'], ['/x/aab.(1)', '/x/a+bx(1)', '/x/a+b.1']);
    check(['^x$|y'], ['/d/^x$|y'], ['/d/x', '/d/y']);
    check(['{a,b}'], ['/d/{a,b}'], ['/d/a', '/d/b']);
    check(['back\\slash'], ['/d/back\\slash'], ['/d/backslash']);
    check(['dot.txt'], ['/d/dot.txt'], ['/d/dotxtxt', '/d/dotXtxt']);
    check(['unclosed['], ['/d/unclosed['], ['/d/unclosed']);
  });

  test('a trailing "/" is ignored (the pattern still matches the directory)', () => {
    check(['node_modules/'], ['/p/node_modules'], ['/p/node_modules_x']);
    check(['/var/cache/'], ['/var/cache'], ['/var/cache2']);
  });

  test('several patterns: a path is excluded when any of them matches', () => {
    check(['*.o', '/build', 'tmp/*'], ['/src/a.o', '/build', '/x/tmp/file'], ['/src/a.c', '/x/build', '/x/tmp']);
  });

  test('names and paths with newlines or unusual characters are matched literally', () => {
    check(['*.tmp'], ['/d/line\nbreak.tmp'], ['/d/x.tmp\n']);
    check(['/d/*'], ['/d/new\nline'], ['/d/a\n/b']);
    check(['日本語*'], ['/x/日本語.txt'], ['/x/中文.txt']);
  });

  test('globToRegex produces anchored-free fragments that compile', () => {
    for (const g of ['*', '**', '**/', '?', '[abc]', '[!a]', '[', 'a]', 'a.b', '(x)', '\\']) {
      assert.doesNotThrow(() => new RegExp(`^${globToRegex(g)}$`, 's'), `glob ${JSON.stringify(g)}`);
    }
  });
});
