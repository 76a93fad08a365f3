/** Open repositories from a location string (storage alone: backend.ts). */
import { Repository } from '../repository/repository.js';
import { FileKeyCache } from '../state/key-cache.js';
import type { RepoRef } from './context.js';
import { openBackend } from './backend.js';

export { openBackend };

export async function openRepository(ref: RepoRef, loadIndex = true): Promise<Repository> {
  const keyCache = ref.keyCacheDir ? new FileKeyCache(ref.keyCacheDir) : undefined;
  const repo = await Repository.open(await openBackend(ref.location, ref.storage), ref.password, { keyCache });
  if (loadIndex) await repo.loadIndex();
  return repo;
}
