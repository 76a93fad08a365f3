/** known_hosts parsing and host-key verdicts (the SFTP driver's host-key verification). */
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { entryMatches, fingerprint, hostString, parseKnownHosts, preferredHostKeyAlgorithms, verifyHostKey } from './known-hosts.js';

/** A syntactically valid key blob of `type` with seeded "key material". */
function blob(type: string, seed: string): Buffer {
  const t = Buffer.from(type);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(t.length);
  return Buffer.concat([len, t, createHash('sha256').update(seed).digest()]);
}

const ED_A = blob('ssh-ed25519', 'a');
const ED_B = blob('ssh-ed25519', 'b');
const RSA_A = blob('ssh-rsa', 'a');
const ECDSA_A = blob('ecdsa-sha2-nistp256', 'a');
const b64 = (b: Buffer): string => b.toString('base64');

function hashed(host: string, salt = Buffer.from('0123456789abcdef0123')): string {
  return `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(host).digest('base64')}`;
}

describe('known_hosts', () => {
  test('host strings: port 22 is the bare name, other ports [host]:port, lower case', () => {
    assert.equal(hostString('Example.ORG', 22), 'example.org');
    assert.equal(hostString('127.0.0.1', 2222), '[127.0.0.1]:2222');
    assert.equal(hostString('::1', 2222), '[::1]:2222');
  });

  test('patterns: lists, wildcards, negation, ports, hashed names', () => {
    assert.ok(entryMatches('a.example,b.example', 'b.example', 22));
    assert.ok(!entryMatches('a.example', 'a.example', 2222), 'a bare name is port 22 only');
    assert.ok(entryMatches('[a.example]:2222', 'a.example', 2222));
    assert.ok(!entryMatches('[a.example]:2222', 'a.example', 22));
    assert.ok(entryMatches('*.example', 'x.example', 22));
    assert.ok(entryMatches('[*.example]:*', 'x.example', 2200));
    assert.ok(entryMatches('host?', 'host1', 22));
    assert.ok(!entryMatches('host?', 'host12', 22));
    assert.ok(!entryMatches('*.example,!bad.example', 'bad.example', 22), 'a negated match wins');
    assert.ok(entryMatches('*.example,!bad.example', 'good.example', 22));
    assert.ok(!entryMatches('!bad.example', 'good.example', 22), 'negation alone matches nothing');
    assert.ok(entryMatches('A.Example', 'a.example', 22), 'case-insensitive');
    assert.ok(!entryMatches('a.example', 'a-example', 22), 'dots are literal');
    assert.ok(entryMatches(hashed('[127.0.0.1]:2222'), '127.0.0.1', 2222));
    assert.ok(!entryMatches(hashed('[127.0.0.1]:2222'), '127.0.0.1', 2223));
    assert.ok(entryMatches(hashed('server'), 'SERVER', 22));
    assert.ok(!entryMatches('|1|broken', 'server', 22));
  });

  test('parsing skips comments, blank, damaged and @cert-authority lines; keeps line numbers and @revoked', () => {
    const text = [
      '# comment',
      '',
      `h1 ssh-ed25519 ${b64(ED_A)} a comment`,
      `h2 ssh-rsa ${b64(ED_A)}`, // type and blob disagree
      'h3 ssh-ed25519 not!base64',
      'h4 ssh-ed25519',
      `@cert-authority *.example ssh-ed25519 ${b64(ED_B)}`,
      `@revoked * ssh-ed25519 ${b64(ED_B)}`,
      `   [h5]:2222,h6   ecdsa-sha2-nistp256 ${b64(ECDSA_A)}   `,
    ].join('\n');
    const entries = parseKnownHosts(text);
    assert.deepEqual(
      entries.map((e) => [e.line, e.marker, e.hosts, e.type]),
      [
        [3, undefined, 'h1', 'ssh-ed25519'],
        [8, 'revoked', '*', 'ssh-ed25519'],
        [9, undefined, '[h5]:2222,h6', 'ecdsa-sha2-nistp256'],
      ],
    );
    assert.ok(entries[0]!.blob.equals(ED_A));
  });

  test('verdicts: known, changed, unknown (with other types noted), revoked', () => {
    const entries = parseKnownHosts(
      [`h ssh-ed25519 ${b64(ED_A)}`, `h ssh-rsa ${b64(RSA_A)}`, `other ssh-ed25519 ${b64(ED_B)}`, `@revoked bad ssh-ed25519 ${b64(ED_A)}`].join('\n'),
    );
    assert.equal(verifyHostKey(entries, 'h', 22, ED_A).status, 'known');
    assert.equal(verifyHostKey(entries, 'h', 22, RSA_A).status, 'known');
    const changed = verifyHostKey(entries, 'h', 22, ED_B);
    assert.equal(changed.status, 'changed');
    assert.equal(changed.status === 'changed' && changed.entries[0]!.line, 1);
    const unknown = verifyHostKey(entries, 'h', 22, ECDSA_A);
    assert.equal(unknown.status, 'unknown');
    assert.deepEqual(unknown.status === 'unknown' && unknown.others.map((e) => e.type), ['ssh-ed25519', 'ssh-rsa']);
    assert.equal(verifyHostKey(entries, 'h', 2222, ED_A).status, 'unknown', 'another port is another host');
    assert.equal(verifyHostKey(entries, 'nobody', 22, ED_A).status, 'unknown');
    assert.equal(verifyHostKey(entries, 'bad', 22, ED_A).status, 'revoked');
    assert.equal(verifyHostKey([], 'h', 22, ED_A).status, 'unknown');
  });

  test('fingerprints are SHA256 in unpadded base64, as ssh prints them', () => {
    const fp = fingerprint(ED_A);
    assert.match(fp, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(fp, `SHA256:${createHash('sha256').update(ED_A).digest('base64').replace(/=+$/, '')}`);
  });

  test('host key algorithms of known keys are offered first', () => {
    const all = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
    const entries = parseKnownHosts(`h ssh-rsa ${b64(RSA_A)}\n@revoked h ssh-ed25519 ${b64(ED_A)}`);
    assert.deepEqual(preferredHostKeyAlgorithms(entries, 'h', 22, all), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256']);
    assert.deepEqual(preferredHostKeyAlgorithms(entries, 'unknown', 22, all), all);
  });
});
