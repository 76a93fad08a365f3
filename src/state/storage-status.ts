/**
 * The storage status cache shared by every holdfast process on the host (docs/design.md §19):
 * one state file per storage location, `<state dir>/storage-status/<16 hex digits of SHA-256 of
 * the location>`, holding `{location, alive, checked, latencyMs?, error?}` (state-file.ts: own
 * timestamp and checksum, atomic replacement, previous version kept). A missing file is normal
 * and silent; a corrupt or unreadable one is reported once at debug level and replaced by the
 * next status written (the caller probes, having no usable status).
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { StatusCache, StorageHealth } from '../storage/multi.js';
import { readStateFile, writeStateFile } from './state-file.js';

interface Entry extends StorageHealth {
  readonly location: string;
}

function isEntry(v: unknown): v is Entry {
  const o = v as Partial<Entry> | null;
  return typeof o === 'object' && o !== null && typeof o.location === 'string' && typeof o.alive === 'boolean' && typeof o.checked === 'number' && Number.isFinite(o.checked);
}

export function statusFile(stateDir: string, location: string): string {
  return path.join(stateDir, 'storage-status', createHash('sha256').update(location).digest('hex').slice(0, 16));
}

export class FileStatusCache implements StatusCache {
  private readonly reported = new Set<string>();

  constructor(
    private readonly stateDir: string,
    private readonly debug: (message: string) => void = () => undefined,
  ) {}

  get(location: string): StorageHealth | undefined {
    const r = readStateFile(statusFile(this.stateDir, location), isEntry);
    if (r.problem && !this.reported.has(location)) {
      this.reported.add(location);
      this.debug(`storage status cache ${r.problem}; it will be replaced`);
    }
    const e = r.state?.value;
    return e && e.location === location ? e : undefined;
  }

  set(location: string, health: StorageHealth): void {
    try {
      writeStateFile(statusFile(this.stateDir, location), { location, ...health }, health.checked);
    } catch (err) {
      // Losing the cache costs a probe in the next process, never data.
      this.debug(`storage status cache for ${location} not written: ${(err as Error).message}`);
    }
  }
}
