/**
 * The Patroni commands' arguments and `pg patroni-config` output, without a server: Patroni's
 * --key=value spellings, unknown keys, refused targets, the YAML (read back with PyYAML, the parser
 * Patroni uses) equal to --json, and pg restore's warning for a Patroni member's data directory.
 * The real Patroni + etcd flow is in src/cli/patroni.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { cli, tmpDir } from '../testing/helpers.js';
import { type Env, expectError, fails, initRepo, ok } from '../testing/e2e.js';
import { patroniManaged } from '../ops/pg-patroni.js';
import { renderYaml } from './cmd-pg-patroni.js';

let dir: string;
let cleanup: () => Promise<void>;
let env: Env;
let pwFile: string;

before(async () => {
  ({ dir, cleanup } = await tmpDir('holdfast-patroni-cli-'));
  pwFile = path.join(dir, 'password');
  fs.writeFileSync(pwFile, 'correct horse\n');
  env = { ...initRepo(path.join(dir, 'repo')), HOLDFAST_PASSWORD: undefined, HOLDFAST_PASSWORD_FILE: pwFile };
});
after(() => cleanup());

function yamlToJson(text: string): unknown {
  const r = spawnSync('python3', ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: text, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`PyYAML could not read the output: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const hasPyYaml = spawnSync('python3', ['-c', 'import yaml'], { encoding: 'utf8' }).status === 0;

test('patroni-config: the YAML reads back (PyYAML) as exactly the --json object, with %p, %f and quotes intact', { skip: hasPyYaml ? false : 'python3 with PyYAML (Patroni\'s YAML parser) is not installed' }, () => {
  const args = ['pg', 'patroni-config', '--cluster', 'c1', '--target-time', "2026-11-21 10:00:00+00", '--target-name', "it's"];
  // Two targets are refused; one with a quote is carried through both quotings.
  fails(args, env, 2, 'USAGE', 'at most one');
  const one = ['pg', 'patroni-config', '--cluster', 'c1', '--target-name', "it's here"];
  const yaml = ok(one, env).stdout;
  const json = JSON.parse(ok([...one, '--json'], env).stdout) as Record<string, any>;
  assert.deepEqual(yamlToJson(yaml), json);
  const dcs = json['bootstrap']['dcs']['postgresql'];
  assert.match(dcs['parameters']['archive_command'], / pg archive-push --cluster c1 --repo \S+ --password-file \S+(?: --config \S+)? %p$/);
  assert.equal(dcs['parameters']['archive_mode'], 'on', 'archive_mode must stay the string on, not a YAML boolean');
  assert.match(dcs['recovery_conf']['restore_command'], / pg archive-get --cluster c1 .* %f %p$/);
  const boot = json['bootstrap']['holdfast'];
  assert.equal(json['bootstrap']['method'], 'holdfast');
  assert.equal(boot['keep_existing_recovery_conf'], true);
  assert.match(boot['command'], / pg patroni-bootstrap --cluster c1 .*--target-name 'it'\\''s here'$/);
  assert.deepEqual(json['postgresql']['create_replica_methods'], ['holdfast', 'basebackup']);
  assert.equal(json['postgresql']['holdfast']['keep_data'], true);
  assert.match(json['postgresql']['holdfast']['command'], / pg patroni-replica --cluster c1 /);

  // Patroni writes the recovery settings: a recovery_conf section with the target and promote.
  const b = JSON.parse(ok(['pg', 'patroni-config', '--cluster', 'c1', '--recovery-settings', 'patroni', '--target-lsn', '0/3000060', '--json'], env).stdout) as Record<string, any>;
  const rc = b['bootstrap']['holdfast']['recovery_conf'];
  assert.equal(b['bootstrap']['holdfast']['keep_existing_recovery_conf'], undefined);
  assert.equal(rc['recovery_target_lsn'], '0/3000060');
  assert.equal(rc['recovery_target_action'], 'promote');
  assert.equal(rc['recovery_target_timeline'], 'latest');
  assert.match(b['bootstrap']['holdfast']['command'], /--recovery-settings patroni --target-lsn 0\/3000060$/);
});

test('patroni-config: needs a password file, refuses pause/shutdown, honours --holdfast-command', () => {
  fails(['pg', 'patroni-config'], { ...env, HOLDFAST_PASSWORD_FILE: undefined, HOLDFAST_PASSWORD: 'x' }, 3, 'CONFIG_INVALID', 'password in a file');
  fails(['pg', 'patroni-config', '--target-immediate', '--target-action', 'pause'], env, 2, 'USAGE', 'promote');
  const j = JSON.parse(ok(['pg', 'patroni-config', '--holdfast-command', '/usr/local/bin/holdfast', '--json'], env).stdout) as Record<string, any>;
  assert.match(j['postgresql']['holdfast']['command'], /^\/usr\/local\/bin\/holdfast pg patroni-replica /);
});

test('Patroni spellings: key_name and True are accepted; an unknown key is a clear error', async () => {
  const data = path.join(dir, 'no-backups');
  // No backup yet: the replica method fails at once (so Patroni tries basebackup), after parsing
  // Patroni's spellings of its keys without complaint.
  const args = ['pg', 'patroni-replica', '--scope=demo', `--datadir=${data}`, '--role=replica', '--keep_data=True', '--no_master=1', '--no_leader=False'];
  const r = cli(args, env);
  expectError(r, args, 17, 'SNAPSHOT_NOT_FOUND', 'no PostgreSQL backup of cluster "main"');
  const bad = ['pg', 'patroni-replica', `--datadir=${data}`, '--restore_mode=fast'];
  expectError(cli(bad, env), bad, 2, 'USAGE', 'unknown option --restore-mode', "method's section", 'Remove "restore-mode"');
  const boot = ['pg', 'patroni-bootstrap', '--scope=demo', `--datadir=${data}`, '--target_time=2026-11-21 10:00:00+00', '--target-action=pause'];
  expectError(cli(boot, env), boot, 2, 'USAGE', 'cannot finish a Patroni bootstrap');
  const both = ['pg', 'patroni-bootstrap', `--datadir=${data}`, '--target-latest', '--target-immediate'];
  expectError(cli(both, env), both, 2, 'USAGE', '--target-latest');
  const noDir = ['pg', 'patroni-bootstrap', '--scope=demo'];
  expectError(cli(noDir, env), noDir, 2, 'USAGE', '--datadir');
  assert.equal(fs.existsSync(data), false, 'nothing was created');
});

test('patroniManaged: patroni.dynamic.json or a Patroni-written postgresql.conf', async () => {
  const d = path.join(dir, 'member');
  fs.mkdirSync(d);
  assert.equal(await patroniManaged(d), undefined);
  fs.writeFileSync(path.join(d, 'postgresql.conf'), "# a plain one\nport = 5432\n");
  assert.equal(await patroniManaged(d), undefined);
  fs.writeFileSync(path.join(d, 'postgresql.conf'), "# Do not edit this file manually!\n# It will be overwritten by Patroni!\ninclude 'postgresql.base.conf'\n");
  assert.match((await patroniManaged(d)) ?? '', /written by Patroni/);
  fs.rmSync(path.join(d, 'postgresql.conf'));
  fs.writeFileSync(path.join(d, 'patroni.dynamic.json'), '{}');
  assert.match((await patroniManaged(d)) ?? '', /patroni\.dynamic\.json/);
});

test('renderYaml quotes every string and refuses what it cannot write', () => {
  assert.equal(renderYaml({ a: { b: "x: 'y' %p", c: true }, l: ['on'] }), "a:\n  b: 'x: ''y'' %p'\n  c: true\nl:\n  - 'on'\n");
  assert.throws(() => renderYaml({ 'bad key': 'x' }));
});
