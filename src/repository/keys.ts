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
import { type ScryptParams, DecryptError, KEY_LEN, scrypt, seal, sha256Hex, unseal } from './crypto.js';

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

export async function createKeyFile(master: Buffer, password: string, params: ScryptParams): Promise<{ id: string; bytes: Buffer }> {
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
  return { id: sha256Hex(bytes), bytes };
}

export function parseKeyFile(bytes: Buffer): KeyFile {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new KeyFormatError('key file is not valid JSON');
  }
  const k = v as Partial<KeyFile>;
  if (typeof k !== 'object' || k === null || k.kdf !== 'scrypt' || typeof k.salt !== 'string' || typeof k.data !== 'string') throw new KeyFormatError('key file lacks kdf, salt or data');
  if (k.version !== KEY_VERSION) throw new KeyFormatError(`key file version ${String(k.version)} is not supported`);
  for (const f of ['N', 'r', 'p'] as const) {
    const n = k[f];
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) throw new KeyFormatError(`key file has an invalid scrypt ${f}`);
  }
  if (k.N! > 2 ** 22 || (k.N! & (k.N! - 1)) !== 0 || k.r! > 32 || k.p! > 16) throw new KeyFormatError('key file scrypt parameters are out of range');
  return k as KeyFile;
}

/** Returns the master key, or undefined when the password does not open this key file. */
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
