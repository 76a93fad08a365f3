import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CATALOGUE } from './catalogue.js';
import { ROOT, cli } from '../testing/helpers.js';

test('every exit code of the catalogue is documented in the README table and in the general help', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const help = cli(['--help']).stdout;
  const codes = [...new Set(Object.values(CATALOGUE).map((s) => s.exit))].filter((c) => c !== 11); // 11 is reserved for locks
  for (const code of codes) {
    assert.match(readme, new RegExp(`^\\| ${code} \\|`, 'm'), `README lists exit code ${code}`);
    assert.match(help, new RegExp(`\\b${code} `), `--help mentions exit code ${code}`);
  }
});

test('exit codes are unique per code, except 1 which only means "no such WAL file"', () => {
  const byExit = new Map<number, string[]>();
  for (const [code, spec] of Object.entries(CATALOGUE)) byExit.set(spec.exit, [...(byExit.get(spec.exit) ?? []), code]);
  for (const [exit, codes] of byExit) assert.equal(codes.length, 1, `exit ${exit} is shared by ${codes.join(', ')}`);
  assert.deepEqual(byExit.get(1), ['WAL_NOT_FOUND']);
});
