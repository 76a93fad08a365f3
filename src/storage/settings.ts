import type { RetrySettings } from './retry.js';

/**
 * Settings of the storage drivers, from options (flags, environment, config file): what a
 * location URL alone does not say. Each driver reads its own part; the local driver needs none.
 */

/** s3://bucket/prefix (src/storage/s3.ts). Credentials come from the standard AWS chain. */
export interface S3Settings {
  /** Endpoint URL of an S3-compatible service (default: AWS for the region). */
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  /** Path-style addressing (endpoint/bucket/key) instead of virtual-hosted style. */
  readonly pathStyle?: boolean | undefined;
  readonly storageClass?: string | undefined;
  /** Server-side encryption: "AES256" or "aws:kms" (with sseKmsKeyId). */
  readonly sse?: string | undefined;
  readonly sseKmsKeyId?: string | undefined;
}

/** sftp://user@host:port/path (src/storage/sftp.ts). */
export interface SftpSettings {
  /** Private key file for key authentication (default: ~/.ssh/id_ed25519, then id_rsa). */
  readonly identityFile?: string | undefined;
  /** known_hosts file the server's host key must be in (default: ~/.ssh/known_hosts). */
  readonly knownHosts?: string | undefined;
}

export interface StorageSettings {
  readonly s3?: S3Settings | undefined;
  readonly sftp?: SftpSettings | undefined;
  /** Further storages of the repository, after the primary (--repo-secondary). */
  readonly secondaries?: readonly string[] | undefined;
  /** How several storages are used (default failover). */
  readonly mode?: 'failover' | 'replicate' | undefined;
  /** replicate: acknowledgements a write needs (default: every storage). */
  readonly quorum?: number | undefined;
  /** How long a storage's cached alive/dead status is trusted (default 60 s). */
  readonly statusTtlMs?: number | undefined;
  /** A probe (write, read back, delete a small object) fails after this long (default 5 s). */
  readonly probeTimeoutMs?: number | undefined;
  /** Remote drivers' requests: timeout, deadline and attempts (storage/retry.ts DEFAULT_RETRY for the rest). */
  readonly retry?: Partial<RetrySettings> | undefined;
  /** Where the shared status cache lives (default: holdfast's state directory). */
  readonly stateDir?: string | undefined;
  /** Messages about storages (marked dead, probed, cache problems). */
  readonly log?: ((level: 'debug' | 'warn', message: string) => void) | undefined;
}
