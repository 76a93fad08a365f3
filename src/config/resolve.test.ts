/**
 * Config file sections: `[cluster NAME]` keys apply to commands run with that cluster, before
 * [global]'s; flags and the environment still win; malformed sections are refused with the line.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { HoldfastError } from '../errors/catalogue.js';
import { parseArgs, resolveOptions } from './resolve.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-resolve-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function writeConf(text: string): string {
  const file = path.join(dir, `conf-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(file, text);
  return file;
}

const CONF = `[global]
repo = /srv/global
compression = zstd:3
recovery-window = 7d

[cluster main]
pgdata = /var/lib/postgresql/15/main
recovery-window = 14d

[cluster "billing"]
repo = /srv/billing
compression = zstd:1
`;

function resolve(command: string, argv: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof resolveOptions> {
  return resolveOptions(command, parseArgs(command, argv), env);
}

test('[cluster NAME] keys apply to that cluster before [global]; flags and environment win', () => {
  const conf = writeConf(CONF);
  const main = resolve('pg backup', ['--config', conf]);
  assert.equal(main.str('repo'), '/srv/global');
  assert.equal(main.str('pgdata'), '/var/lib/postgresql/15/main');
  assert.equal(main.num('recovery-window'), 14 * 86_400_000);
  assert.equal(main.where('recovery-window'), `${conf}:8 (recovery-window)`);
  const billing = resolve('pg backup', ['--config', conf, '--cluster', 'billing']);
  assert.equal(billing.str('repo'), '/srv/billing');
  assert.equal(billing.str('compression'), 'zstd:1');
  assert.equal(billing.num('recovery-window'), 7 * 86_400_000, 'from [global]');
  assert.equal(billing.get('pgdata'), undefined, "main's section does not leak into billing");
  const viaEnv = resolve('pg backup', ['--config', conf], { HOLDFAST_CLUSTER: 'billing' });
  assert.equal(viaEnv.str('repo'), '/srv/billing', 'the cluster may come from the environment');
  assert.equal(resolve('pg backup', ['--config', conf, '--cluster', 'billing', '--repo', '/flag']).str('repo'), '/flag');
  assert.equal(resolve('pg backup', ['--config', conf, '--cluster', 'billing'], { HOLDFAST_REPO: '/env' }).str('repo'), '/env');
  // Commands without --cluster see [global] only.
  assert.equal(resolve('backup', ['--config', conf]).str('compression'), 'zstd:3');
});

test('the default cluster may be set under [global]; malformed sections are refused with their line', () => {
  const conf = writeConf(`cluster = billing\n${CONF}`);
  assert.equal(resolve('pg expire', ['--config', conf]).str('repo'), '/srv/billing');
  const refused = (text: string, line: number, what: RegExp): void => {
    const file = writeConf(text);
    assert.throws(
      () => resolve('pg backup', ['--config', file]),
      (e: unknown) => e instanceof HoldfastError && e.code === 'CONFIG_INVALID' && e.message.includes(`${file}:${line}`) && what.test(e.message),
    );
  };
  refused('[postgres]\nrepo = /x\n', 1, /unknown section \[postgres\]/);
  refused('[cluster bad/name]\nrepo = /x\n', 1, /unknown section/);
  refused('[cluster main]\ncluster = other\n', 2, /cannot be set inside/);
});
