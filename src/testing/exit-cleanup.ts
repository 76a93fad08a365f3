/**
 * Cleanup of what a failed or interrupted test left behind (clusters, mounts): run on exit and on
 * SIGINT/SIGTERM, after which the process still ends as it would have without us. Used by the
 * test harnesses only.
 */
const cleanups: Array<() => void> = [];
let installed = false;

/** Register `fn` (best effort: its errors are ignored) to run once the process ends. */
export function onExitCleanup(fn: () => void): void {
  cleanups.push(fn);
  if (installed) return;
  installed = true;
  const runAll = (): void => {
    for (const f of cleanups.splice(0)) {
      try {
        f();
      } catch {
        /* best effort while exiting */
      }
    }
  };
  process.on('exit', runAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      runAll();
      process.removeListener(sig, onSignal);
      // Alone, we re-raise so the default action (death by the signal) happens; otherwise the
      // other listeners (node:test's own) were called for this signal too and decide.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

const destroyedOnExit = new WeakSet<ReadonlySet<unknown>>();

/**
 * Once per `live` set (later calls with the same set do nothing): when the process ends, call
 * `destroy` on every item still in it, each best effort, so one that fails does not keep the
 * others alive. Cleanups run in the order they were registered.
 */
export function destroyOnExit<T>(live: ReadonlySet<T>, destroy: (item: T) => void): void {
  if (destroyedOnExit.has(live)) return;
  destroyedOnExit.add(live);
  onExitCleanup(() => {
    for (const item of [...live]) {
      try {
        destroy(item);
      } catch {
        /* best effort while exiting */
      }
    }
  });
}
