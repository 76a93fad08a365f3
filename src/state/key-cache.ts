/**
 * A local cache of key-encryption keys, so that short-lived processes (archive-push and
 * archive-get run once per WAL file) skip the deliberately slow scrypt step.
 *
 * Where: `$HOLDFAST_STATE_DIR/keys`, else `$XDG_CACHE_HOME/holdfast/keys`, else
 * `~/.cache/holdfast/keys`, else `<tmpdir>/holdfast-<uid>/keys`: always local, per user, mode 0700,
 * entries 0600. What: per (password, key file) the 32-byte KEK that scrypt derives. Callers use it
 * only when the password itself is stored in a file (--password-file) with the same protection,
 * so the cache holds nothing a reader of that file could not derive.
 *
 * Entry names are HMAC-SHA256(a random secret kept in the cache directory, password ‖ key id):
 * the name of an entry is no fast oracle for guessing the password, and a changed password simply
 * misses. A KEK that no longer opens its key file is dropped and scrypt runs again (the KEK's own
 * check is the AEAD tag of the key file it unwraps); a damaged secret is replaced, so entries made
 * with it simply miss. Every failure here is silent (debug at most): the cache only saves time.
 */
import { createHmac, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface KeyCache {
  get(keyId: string, password: string): Buffer | undefined;
  put(keyId: string, password: string, kek: Buffer): void;
  drop(keyId: string, password: string): void;
}

/** holdfast's local, per-user state directory (key cache, archive spool). */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['HOLDFAST_STATE_DIR']) return env['HOLDFAST_STATE_DIR'];
  if (env['XDG_CACHE_HOME']) return path.join(env['XDG_CACHE_HOME'], 'holdfast');
  const home = env['HOME'] ?? os.homedir();
  if (home && home !== '/' && home !== '/nonexistent') return path.join(home, '.cache', 'holdfast');
  return path.join(os.tmpdir(), `holdfast-${process.getuid?.() ?? 'user'}`);
}

export function defaultKeyCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(defaultStateDir(env), 'keys');
}

export class FileKeyCache implements KeyCache {
  private secret: Buffer | undefined;

  constructor(private readonly dir: string) {}

  private ensure(): Buffer | undefined {
    if (this.secret) return this.secret;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const st = fs.statSync(this.dir);
      // Never use a directory another user could read or plant entries in.
      if (st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) return undefined;
      const file = path.join(this.dir, 'secret');
      let secret: Buffer | undefined;
      try {
        secret = fs.readFileSync(file);
      } catch {
        secret = undefined;
      }
      // Missing, or torn by a crash: a fresh secret (entries named with the old one just miss).
      if (secret?.length !== 32) {
        const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
        fs.writeFileSync(tmp, randomBytes(32), { mode: 0o600 });
        fs.renameSync(tmp, file);
        secret = fs.readFileSync(file); // whoever won a race, all use the same secret
      }
      this.secret = secret.length === 32 ? secret : undefined;
      return this.secret;
    } catch {
      return undefined;
    }
  }

  private entry(keyId: string, password: string): string | undefined {
    const secret = this.ensure();
    if (!secret) return undefined;
    const name = createHmac('sha256', secret).update(password).update('\0').update(keyId).digest('hex');
    return path.join(this.dir, name);
  }

  get(keyId: string, password: string): Buffer | undefined {
    const file = this.entry(keyId, password);
    if (!file) return undefined;
    try {
      const kek = fs.readFileSync(file);
      return kek.length === 32 ? kek : undefined;
    } catch {
      return undefined;
    }
  }

  put(keyId: string, password: string, kek: Buffer): void {
    const file = this.entry(keyId, password);
    if (!file) return;
    try {
      const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      fs.writeFileSync(tmp, kek, { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch {
      // no cache, no harm
    }
  }

  drop(keyId: string, password: string): void {
    const file = this.entry(keyId, password);
    if (file) fs.rmSync(file, { force: true });
  }
}
