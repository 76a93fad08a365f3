/**
 * Key files: `keys/<sha256 of the file>`, plaintext JSON. Each wraps the repository's master key
 * with a key derived from one password by scrypt. Any key opens the repository; several may
 * exist. Format:
 *
 *   { "version": 1, "created": ISO-8601, "host": …, "username": …,
 *     "kdf": "scrypt", "N": 65536, "r": 8, "p": 1, "salt": base64 (32 bytes),
 *     "data": base64(sealed master key, AAD "holdfast:key") }
 */
import { hostname } from 'node:os';
import { currentUsername } from '../util/user.js';
import { randomBytes } from 'node:crypto';
import { type ScryptParams, DecryptError, KEY_LEN, SEAL_OVERHEAD, scrypt, seal, sha256Hex, unseal } from './crypto.js';

const KEY_AAD = Buffer.from('holdfast:key', 'latin1');
export const KEY_VERSION = 1;

export interface KeyFile {
  version: number;
  created: string;
  host: string;
  username: string;
  kdf: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
  data: string;
}

export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

/** Default scrypt cost: N = 2^16, r = 8, p = 1 (64 MiB, roughly 0.2 s here). */
export function kdfParams(logN: number): ScryptParams {
  return { N: 2 ** logN, r: 8, p: 1 };
}

/** A new key file wrapping `master` under `password`; also returns the KEK scrypt derived (for the key cache). */
export async function createKeyFile(master: Buffer, password: string, params: ScryptParams): Promise<{ id: string; bytes: Buffer; kek: Buffer }> {
  const salt = randomBytes(32);
  const kek = await scrypt(password, salt, params);
  const username = currentUsername();
  const file: KeyFile = {
    version: KEY_VERSION,
    created: new Date().toISOString(),
    host: hostname(),
    username,
    kdf: 'scrypt',
    N: params.N,
    r: params.r,
    p: params.p,
    salt: salt.toString('base64'),
    data: seal(kek, KEY_AAD, [master]).toString('base64'),
  };
  const bytes = Buffer.from(JSON.stringify(file, null, 1) + '\n');
  return { id: sha256Hex(bytes), bytes, kek };
}

/** Key files are a few hundred bytes; anything far larger is not one (and is not parsed). */
const MAX_KEY_FILE = 64 << 10;
/**
 * scrypt needs 128·N·r bytes and time in proportion to N·r·p. The most a key holdfast writes
 * asks for is --kdf-cost 22 (N = 2^22, r = 8, p = 1): 4 GiB. The per-parameter limits alone
 * would let a forged file ask for 16 GiB (r = 32) or 16 times the time (p = 16).
 */
const MAX_SCRYPT_NR = 2 ** 25;

/** True when `s` is standard padded base64 of exactly `bytes` bytes. */
function isBase64Of(s: string, bytes: number): boolean {
  return s.length === 4 * Math.ceil(bytes / 3) && Buffer.from(s, 'base64').toString('base64') === s;
}

/** Parse and validate a key file; KeyFormatError for anything that is not a usable one. */
export function parseKeyFile(bytes: Buffer): KeyFile {
  if (bytes.length > MAX_KEY_FILE) throw new KeyFormatError(`key file of ${bytes.length} bytes is too large to be one`);
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new KeyFormatError('key file is not valid JSON');
  }
  const k = v as Partial<KeyFile>;
  if (typeof k !== 'object' || k === null || Array.isArray(k) || k.kdf !== 'scrypt' || typeof k.salt !== 'string' || typeof k.data !== 'string') throw new KeyFormatError('key file lacks kdf, salt or data');
  if (k.version !== KEY_VERSION) throw new KeyFormatError(`key file version ${typeof k.version === 'number' ? k.version : typeof k.version} is not supported`);
  for (const f of ['created', 'host', 'username'] as const) {
    if (typeof k[f] !== 'string') throw new KeyFormatError(`key file has no valid ${f}`);
  }
  for (const f of ['N', 'r', 'p'] as const) {
    const n = k[f];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw new KeyFormatError(`key file has an invalid scrypt ${f}`);
  }
  const { N, r, p } = k as KeyFile;
  if (N > 2 ** 22 || (N & (N - 1)) !== 0 || r > 32 || p > 16 || N * r > MAX_SCRYPT_NR || N * r * p > MAX_SCRYPT_NR) throw new KeyFormatError('key file scrypt parameters are out of range');
  if (!isBase64Of(k.salt, 32)) throw new KeyFormatError('key file salt is not 32 bytes of base64');
  if (!isBase64Of(k.data, SEAL_OVERHEAD + KEY_LEN)) throw new KeyFormatError('key file data is not a sealed 32-byte key in base64');
  // Only the known fields, so nothing unvalidated travels on to code that prints key files.
  const { version, created, host, username, kdf, salt, data } = k as KeyFile;
  return { version, created, host, username, kdf, N, r, p, salt, data };
}

/** The key-encryption key of a key file for a password (the expensive scrypt step). */
export function deriveKek(file: KeyFile, password: string): Promise<Buffer> {
  return scrypt(password, Buffer.from(file.salt, 'base64'), { N: file.N, r: file.r, p: file.p });
}

export async function unwrapKey(file: KeyFile, password: string): Promise<Buffer | undefined> {
  return unwrapWithKek(file, await deriveKek(file, password));
}

/** The master key, or undefined when `kek` does not open this key file. */
export function unwrapWithKek(file: KeyFile, kek: Buffer): Buffer | undefined {
  try {
    const master = unseal(kek, KEY_AAD, Buffer.from(file.data, 'base64'));
    if (master.length !== KEY_LEN) throw new KeyFormatError('wrapped master key has the wrong length');
    return master;
  } catch (err) {
    if (err instanceof DecryptError) return undefined;
    throw err;
  }
}
