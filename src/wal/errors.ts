/**
 * Typed errors of the WAL module. They are not catalogue errors: this module only understands
 * PostgreSQL's formats, and the command that meets one of these errors (archive-push, archive-get,
 * restore, check) decides what it means to the user and wraps it in a `HoldfastError` with `cause`.
 *
 * - `WalFormatError`: the input is not what PostgreSQL writes (a name that is not a WAL-archive
 *   name, an LSN that does not parse, a malformed history file, a buffer that is not a WAL segment
 *   header). `reason` says which check failed.
 * - `WalMismatchError`: the input is a well-formed WAL segment, but not the one that was expected
 *   (another cluster, another segment, another segment size or PostgreSQL version).
 *
 * `data` holds only JSON-safe values (bigints — LSNs and system identifiers — as strings), so a
 * `HoldfastError` built from it still serialises with `toJSON()`.
 */

export type WalFormatReason =
  /** Not a WAL segment, `.partial`, timeline history or backup history file name. */
  | 'invalid-name'
  /** Not an LSN of the form `16/B374D848`. */
  | 'invalid-lsn'
  /** A segment size argument that PostgreSQL does not allow (power of two, 1 MiB – 1 GiB). */
  | 'invalid-seg-size'
  /** A computed timeline, segment number or LSN left its 32/64-bit range. */
  | 'out-of-range'
  /** A timeline history file line that does not parse. */
  | 'history-syntax'
  /** Timeline IDs in a history file not strictly increasing, or not below the file's own timeline. */
  | 'history-order'
  /** The buffer is shorter than a long page header. */
  | 'truncated'
  /** `xlp_magic` is not the WAL magic of a supported PostgreSQL release. */
  | 'unknown-magic'
  /** `xlp_info` lacks XLP_LONG_HEADER: not the first page of a segment. */
  | 'no-long-header'
  /** `xlp_info` has bits PostgreSQL never sets. */
  | 'invalid-info-bits'
  /** `xlp_tli` is 0. */
  | 'invalid-timeline'
  /** `xlp_seg_size` is not a power of two between 1 MiB and 1 GiB. */
  | 'implausible-seg-size'
  /** `xlp_xlog_blcksz` is not a power of two between 1 KiB and 64 KiB. */
  | 'implausible-block-size'
  /** `xlp_pageaddr` of a long header is not at a segment boundary. */
  | 'misaligned-page-address'
  /** The file's size is not the segment size its header declares. */
  | 'wrong-file-size';

export class WalFormatError extends Error {
  override name = 'WalFormatError';
  readonly reason: WalFormatReason;
  readonly data: Readonly<Record<string, string | number | boolean>>;

  constructor(reason: WalFormatReason, message: string, data: Record<string, string | number | boolean> = {}) {
    super(message);
    this.reason = reason;
    this.data = data;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, reason: this.reason, message: this.message, data: this.data };
  }
}

export type WalMismatchReason =
  /** `xlp_sysid` differs from the cluster's system identifier: another cluster's WAL. */
  | 'system-id'
  /** `xlp_pageaddr` is not the start LSN of the segment the file is named after. */
  | 'page-address'
  /** `xlp_tli` is later than the timeline in the file name. */
  | 'timeline'
  /** `xlp_seg_size` differs from the expected segment size. */
  | 'seg-size'
  /** The magic number belongs to another PostgreSQL major version than expected. */
  | 'pg-version';

export class WalMismatchError extends Error {
  override name = 'WalMismatchError';
  readonly reason: WalMismatchReason;
  /** What the file says, as text (LSNs as `X/Y`, system identifiers in decimal). */
  readonly actual: string;
  /** What was expected, in the same form. */
  readonly expected: string;
  readonly data: Readonly<Record<string, string | number | boolean>>;

  constructor(reason: WalMismatchReason, message: string, actual: string, expected: string, data: Record<string, string | number | boolean> = {}) {
    super(message);
    this.reason = reason;
    this.actual = actual;
    this.expected = expected;
    this.data = { ...data, actual, expected };
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, reason: this.reason, message: this.message, data: this.data };
  }
}
