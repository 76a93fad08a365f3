/**
 * Authenticated encryption for every stored byte: AES-256-GCM with a random 96-bit nonce per
 * object. Layout of a sealed object: nonce (12) || ciphertext || tag (16). The additional
 * authenticated data binds the ciphertext to its role (for blobs: type and id), so an object
 * cannot be passed off as another kind of object.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt as scryptCb } from 'node:crypto';

export const KEY_LEN = 32;
export const NONCE_LEN = 12;
export const TAG_LEN = 16;
export const SEAL_OVERHEAD = NONCE_LEN + TAG_LEN;

export class DecryptError extends Error {
  constructor(message = 'authentication failed: the object was modified, is corrupt, or belongs to another key') {
    super(message);
    this.name = 'DecryptError';
  }
}

/**
 * Encrypts a plaintext given piece by piece (a WAL segment compressed 1 MiB at a time), so that
 * no piece has to be kept once it is encrypted. `finish` returns the sealed object as a list of
 * buffers (nonce, ciphertext pieces, tag), so large objects need not be copied into one buffer.
 */
export class Sealer {
  private readonly cipher;
  private readonly out: Buffer[];
  private length = NONCE_LEN + TAG_LEN;

  constructor(key: Buffer, aad: Buffer) {
    const nonce = randomBytes(NONCE_LEN);
    this.cipher = createCipheriv('aes-256-gcm', key, nonce);
    this.cipher.setAAD(aad);
    this.out = [nonce];
  }

  update(piece: Uint8Array): void {
    const c = this.cipher.update(piece);
    this.out.push(c);
    this.length += c.length;
  }

  finish(): { parts: Buffer[]; length: number } {
    const fin = this.cipher.final();
    if (fin.length > 0) this.out.push(fin);
    this.length += fin.length;
    this.out.push(this.cipher.getAuthTag());
    return { parts: this.out, length: this.length };
  }
}

/** Encrypt the concatenation of `parts` under `key`, as a list of buffers (see Sealer). */
export function sealParts(key: Buffer, aad: Buffer, parts: readonly Uint8Array[]): { parts: Buffer[]; length: number } {
  const s = new Sealer(key, aad);
  for (const p of parts) s.update(p);
  return s.finish();
}

/** Encrypt the concatenation of `parts` under `key` into one buffer. */
export function seal(key: Buffer, aad: Buffer, parts: readonly Uint8Array[]): Buffer {
  const s = sealParts(key, aad, parts);
  return Buffer.concat(s.parts, s.length);
}

/** Decrypt and authenticate; throws DecryptError on any mismatch or a too-short input. */
export function unseal(key: Buffer, aad: Buffer, sealed: Uint8Array): Buffer {
  if (sealed.length < SEAL_OVERHEAD) throw new DecryptError(`sealed object too short (${sealed.length} bytes)`);
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const nonce = buf.subarray(0, NONCE_LEN);
  const tag = buf.subarray(buf.length - TAG_LEN);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    const body = decipher.update(buf.subarray(NONCE_LEN, buf.length - TAG_LEN));
    const fin = decipher.final(); // GCM: empty, but it is what checks the tag
    return fin.length === 0 ? body : Buffer.concat([body, fin]);
  } catch {
    throw new DecryptError();
  }
}

export function sha256(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

export function scrypt(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password.normalize('NFC'), salt, KEY_LEN, { ...params, maxmem: 256 * params.N * params.r + (16 << 20) }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}
