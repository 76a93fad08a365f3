import { HoldfastError } from '../errors/catalogue.js';
import { kdfParams } from '../repository/keys.js';
import type { OpContext, RepoRef } from './context.js';
import { withRepoLock } from './locking.js';
import { openRepository } from './repo.js';

export interface KeyInfo {
  id: string;
  current: boolean;
  created?: string;
  host?: string;
  username?: string;
  kdf?: string;
}

export async function listKeys(ref: RepoRef): Promise<KeyInfo[]> {
  const repo = await openRepository(ref, false);
  try {
    return (await repo.listKeys()).map((k) => ({
      id: k.id,
      current: k.current,
      ...(k.file ? { created: k.file.created, host: k.file.host, username: k.file.username, kdf: `scrypt N=${k.file.N} r=${k.file.r} p=${k.file.p}` } : {}),
    }));
  } finally {
    await repo.close();
  }
}

export async function addKey(ref: RepoRef, newPassword: string, kdfCost: number, ctx: OpContext): Promise<string> {
  const repo = await openRepository(ref, false);
  try {
    // A shared lock: it carries the intent that makes the key file and its copy one commit (§8.2).
    return await withRepoLock(repo, ref.location, ctx, 'shared', 'key add', () => repo.addKey(newPassword, kdfParams(kdfCost)));
  } finally {
    await repo.close();
  }
}

/** Resolve a unique key id prefix. */
async function resolveKey(ref: RepoRef, prefix: string): Promise<string> {
  const ids = (await listKeys(ref)).map((k) => k.id).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) {
    throw new HoldfastError('OBJECT_MISSING', ids.length === 0 ? `no key with id ${prefix}` : `key id prefix ${prefix} is ambiguous (${ids.length} keys)`, { key: prefix, hint: 'Run `holdfast key list` to see key ids.' });
  }
  return ids[0]!;
}

export async function removeKey(ref: RepoRef, prefix: string, ctx: OpContext): Promise<string> {
  const id = await resolveKey(ref, prefix);
  const repo = await openRepository(ref, false);
  try {
    await withRepoLock(repo, ref.location, ctx, 'exclusive', 'key remove', () => repo.removeKey(id), { allStorages: true });
    return id;
  } finally {
    await repo.close();
  }
}

/** Change the password: add a key for the new password, then remove the one that was used. */
export async function changePassword(ref: RepoRef, newPassword: string, kdfCost: number, ctx: OpContext): Promise<{ added: string; removed: string }> {
  const repo = await openRepository(ref, false);
  try {
    const added = await withRepoLock(repo, ref.location, ctx, 'shared', 'key add', () => repo.addKey(newPassword, kdfParams(kdfCost)));
    const removed = repo.keyId;
    // Remove through a repository opened with the new key, so the key in use is never the one removed.
    const again = await openRepository({ ...ref, password: newPassword }, false);
    try {
      await withRepoLock(again, ref.location, ctx, 'exclusive', 'key passwd', () => again.removeKey(removed), { allStorages: true });
    } finally {
      await again.close();
    }
    return { added, removed };
  } finally {
    await repo.close();
  }
}
