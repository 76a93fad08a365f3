/**
 * Give free heap pages back to the OS a few times a second (see native/malloc-tune.c), so peak
 * RSS follows the live data instead of glibc's fragmentation. Optional: without the addon (not
 * built, not glibc) holdfast works the same, with a higher peak RSS.
 */
import { createRequire } from 'node:module';

let timer: NodeJS.Timeout | undefined;

/** Start trimming; returns a line for the debug log. The timer never keeps the process alive. */
export function startHeapTrimmer(intervalMs = 250): string {
  if (timer) return 'heap trimmer already running';
  const require = createRequire(import.meta.url);
  for (const candidate of ['./malloc-tune.node', '../malloc-tune.node']) {
    try {
      const addon = require(candidate) as { trim(): boolean };
      timer = setInterval(() => addon.trim(), intervalMs);
      timer.unref();
      return `returning free heap memory to the OS every ${intervalMs} ms`;
    } catch {
      // try the next location
    }
  }
  return 'malloc-tune addon not available; heap memory is not trimmed';
}
