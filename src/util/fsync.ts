/**
 * Making file system changes durable: a new or renamed name is on disk only once its directory
 * has been fsynced (the file's own fsync covers its content and metadata, never its name).
 */
import * as fsp from 'node:fs/promises';

/** fsync a directory: the entries created, renamed or removed in it so far are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
