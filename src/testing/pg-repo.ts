/**
 * A repository for PostgreSQL tests, set up the way production has it: repository and password
 * file owned by the postgres user, the repository created by postgres (archive_command runs as
 * postgres), and archive_command strings that call this checkout's holdfast.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, TEST_KDF } from './helpers.js';
import { chownToPostgres, runAsPostgres } from './pg.js';

export interface PgRepo {
  readonly repo: string;
  readonly pwFile: string;
  /** HOLDFAST_REPO, HOLDFAST_PASSWORD_FILE and HOLDFAST_CONFIG=/dev/null. */
  readonly env: Record<string, string>;
  /** An archive_command running `holdfast pg archive-push ARGS… %p` with `env` (plus `extraEnv`) inline. */
  archiveCommand(args?: readonly string[], extraEnv?: Record<string, string>): string;
}

export function postgresRepository(dir: string, password = 'pg test secret'): PgRepo {
  fs.chmodSync(dir, 0o755);
  const repo = path.join(dir, 'repo');
  fs.mkdirSync(repo);
  const pwFile = path.join(dir, 'password');
  fs.writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  chownToPostgres(repo, true);
  chownToPostgres(pwFile);
  const env = { HOLDFAST_REPO: repo, HOLDFAST_PASSWORD_FILE: pwFile, HOLDFAST_CONFIG: '/dev/null' };
  const init = runAsPostgres(process.execPath, [CLI, 'init', '--kdf-cost', TEST_KDF], env);
  assert.equal(init.status, 0, init.stderr);
  return {
    repo,
    pwFile,
    env,
    archiveCommand: (args = [], extraEnv = {}) =>
      [...Object.entries({ ...env, ...extraEnv }).map(([k, v]) => `${k}=${v}`), process.execPath, CLI, 'pg', 'archive-push', ...args, '%p'].join(' '),
  };
}
