/**
 * OpenSSH known_hosts files, for the SFTP driver's host-key verification (sshd(8) "SSH_KNOWN_HOSTS
 * FILE FORMAT"): which keys a file holds for a host and port, and what to say when the server's
 * key is not among them.
 *
 * Supported: plain host patterns (comma-separated, `*` and `?` wildcards, `!` negation), the
 * `[host]:port` form of non-standard ports, hashed entries (`|1|salt|hash`, HMAC-SHA1 of the host
 * string keyed by the salt, as `ssh-keygen -H` and HashKnownHosts write them), `@revoked` lines
 * (such a key is refused for the hosts it names) and comments. `@cert-authority` lines are ignored:
 * host certificates are not supported, so they can never make a key trusted.
 *
 * As in OpenSSH, a host on port 22 is looked up as `host`, any other port as `[host]:port`, host
 * names compared in lower case.
 */
import { createHash, createHmac } from 'node:crypto';

export interface KnownHostEntry {
  /** 1-based line number in the file. */
  readonly line: number;
  readonly marker: 'revoked' | undefined;
  /** The host field as written (patterns or a hashed entry). */
  readonly hosts: string;
  /** Key type as written, e.g. `ssh-ed25519`. */
  readonly type: string;
  /** The public key blob (base64-decoded). */
  readonly blob: Buffer;
}

/** Parse a known_hosts file; malformed lines are skipped, as ssh does. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '' || raw.startsWith('#')) continue;
    let fields = raw.split(/\s+/);
    let marker: 'revoked' | undefined;
    if (fields[0]!.startsWith('@')) {
      if (fields[0] === '@revoked') marker = 'revoked';
      else continue; // @cert-authority: host certificates are not supported
      fields = fields.slice(1);
    }
    const [hosts, type, b64] = fields;
    if (hosts === undefined || type === undefined || b64 === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const blob = Buffer.from(b64, 'base64');
    // The blob starts with its own type string; a line whose two disagree is damaged.
    if (blobType(blob) !== type) continue;
    out.push({ line: i + 1, marker, hosts, type, blob });
  }
  return out;
}

/** The host string OpenSSH looks up: `host` on port 22, `[host]:port` otherwise. */
export function hostString(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** Whether an entry's host field names `host:port`. */
export function entryMatches(hosts: string, host: string, port: number): boolean {
  const name = hostString(host, port);
  if (hosts.startsWith('|1|')) {
    const [, , salt, hash] = hosts.split('|');
    if (salt === undefined || hash === undefined) return false;
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return mac === hash;
  }
  let matched = false;
  for (const pattern of hosts.split(',')) {
    const negated = pattern.startsWith('!');
    const p = (negated ? pattern.slice(1) : pattern).toLowerCase();
    if (!wildcardMatch(p, name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/** OpenSSH's match_pattern: `*` any run of characters, `?` one character. */
function wildcardMatch(pattern: string, s: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 's');
  return re.test(s);
}

/** The type string at the start of an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, …). */
export function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  if (n === 0 || n > 64 || blob.length < 4 + n) return undefined;
  return blob.toString('latin1', 4, 4 + n);
}

/** `SHA256:<base64 without padding>`, as `ssh-keygen -l` and ssh print fingerprints. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The short type name `ssh-keyscan -t` and `ssh-keygen -t` take. */
export function shortType(type: string): string {
  if (type === 'ssh-ed25519') return 'ed25519';
  if (type.startsWith('ecdsa-sha2-')) return 'ecdsa';
  if (type === 'ssh-rsa') return 'rsa';
  return type;
}

export type HostKeyVerdict =
  | { readonly status: 'known'; readonly entry: KnownHostEntry }
  | { readonly status: 'revoked'; readonly entry: KnownHostEntry }
  /** Keys of the same type are known for the host, and this is none of them. */
  | { readonly status: 'changed'; readonly entries: readonly KnownHostEntry[] }
  /** No key of this type is known for the host (`others`: keys of other types that are). */
  | { readonly status: 'unknown'; readonly others: readonly KnownHostEntry[] };

/** Judge the key a server at `host:port` presented against the file's entries. */
export function verifyHostKey(entries: readonly KnownHostEntry[], host: string, port: number, blob: Buffer): HostKeyVerdict {
  const type = blobType(blob);
  const forHost = entries.filter((e) => entryMatches(e.hosts, host, port));
  const revoked = forHost.find((e) => e.marker === 'revoked' && e.blob.equals(blob));
  if (revoked) return { status: 'revoked', entry: revoked };
  const trusted = forHost.filter((e) => e.marker === undefined);
  const same = trusted.find((e) => e.blob.equals(blob));
  if (same) return { status: 'known', entry: same };
  const sameType = trusted.filter((e) => e.type === type);
  if (sameType.length > 0) return { status: 'changed', entries: sameType };
  return { status: 'unknown', others: trusted };
}

/**
 * Host key algorithms to offer, those of the keys known for the host first: a server with several
 * host keys then presents one the file knows (as ssh orders HostKeyAlgorithms by known_hosts).
 */
export function preferredHostKeyAlgorithms(entries: readonly KnownHostEntry[], host: string, port: number, supported: readonly string[]): string[] {
  const known = new Set(entries.filter((e) => e.marker === undefined && entryMatches(e.hosts, host, port)).map((e) => e.type));
  const algorithmType = (alg: string): string => (alg.startsWith('rsa-sha2-') ? 'ssh-rsa' : alg);
  return [...supported.filter((a) => known.has(algorithmType(a))), ...supported.filter((a) => !known.has(algorithmType(a)))];
}
