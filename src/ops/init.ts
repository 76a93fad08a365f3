import { Repository } from '../repository/repository.js';
import { kdfParams } from '../repository/keys.js';
import { HoldfastError } from '../errors/catalogue.js';
import type { RepoRef } from './context.js';
import { FileKeyCache } from '../state/key-cache.js';
import { openBackend } from './repo.js';

export interface InitParams {
  readonly kdfCost: number;
  readonly chunkMin: number;
  readonly chunkAvg: number;
  readonly chunkMax: number;
}

export async function initRepository(ref: RepoRef, p: InitParams): Promise<{ id: string; location: string; keyId: string }> {
  if (!(p.chunkMin <= p.chunkAvg && p.chunkAvg <= p.chunkMax)) {
    throw new HoldfastError('CONFIG_INVALID', `chunk sizes must satisfy min <= avg <= max (got ${p.chunkMin}, ${p.chunkAvg}, ${p.chunkMax})`, {});
  }
  const repo = await Repository.init(await openBackend(ref.location, ref.storage), ref.password, {
    kdf: kdfParams(p.kdfCost),
    chunker: { min: p.chunkMin, avg: p.chunkAvg, max: p.chunkMax },
    // A password from a file: cached for this user as the next command would cache it.
    keyCache: ref.keyCacheDir ? new FileKeyCache(ref.keyCacheDir) : undefined,
  });
  await repo.close();
  return { id: repo.config.id, location: repo.backend.location, keyId: repo.keyId };
}
