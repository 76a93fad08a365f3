/** Open storage and repositories from a location string. */
import * as path from 'node:path';
import { HoldfastError } from '../errors/catalogue.js';
import type { Backend } from '../storage/backend.js';
import { LocalBackend } from '../storage/local.js';
import { LimitBackend } from '../storage/limit.js';
import { Repository } from '../repository/repository.js';
import { FileKeyCache } from '../state/key-cache.js';
import type { RepoRef } from './context.js';

export function openBackend(location: string): Backend {
  let dir: string;
  if (location.startsWith('file://')) dir = decodeURIComponent(location.slice('file://'.length));
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    const scheme = location.slice(0, location.indexOf(':'));
    throw new HoldfastError('CONFIG_INVALID', `repository location ${location}: storage type "${scheme}" is not supported by this version`, {
      location,
      hint: 'Use a local directory path or file:///path. S3 and SFTP storage are planned.',
    });
  } else dir = location;
  if (dir === '') throw new HoldfastError('CONFIG_INVALID', 'repository location is empty', { hint: 'Set --repo or HOLDFAST_REPO.' });
  return new LimitBackend(new LocalBackend(path.resolve(dir)));
}

export async function openRepository(ref: RepoRef, loadIndex = true): Promise<Repository> {
  const keyCache = ref.keyCacheDir ? new FileKeyCache(ref.keyCacheDir) : undefined;
  const repo = await Repository.open(openBackend(ref.location), ref.password, { keyCache });
  if (loadIndex) await repo.loadIndex();
  return repo;
}
