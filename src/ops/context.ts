/** What every operation receives from its caller (CLI today; daemon and web API later). */
import type { Logger } from '../ui/output.js';

export interface OpContext {
  readonly log: Logger;
  /** Draw live progress on stderr. */
  readonly progress: boolean;
  readonly signal?: AbortSignal | undefined;
}

export interface RepoRef {
  readonly location: string;
  readonly password: string;
  /** Where to cache derived keys (set only when the password comes from a file). */
  readonly keyCacheDir?: string | undefined;
}
