/**
 * The long page header at the start of every PostgreSQL WAL segment, and the checks archive-push
 * makes before it stores a file as a segment: is it WAL at all, of a supported PostgreSQL release,
 * of this cluster, and is it the segment its name says. Pure functions over a buffer, no I/O; only
 * the first `WAL_LONG_HEADER_SIZE` (40) bytes of the file are needed.
 *
 * ## Layout (src/include/access/xlog_internal.h, identical in PostgreSQL 12–17)
 *
 * Little-endian (x86-64, aarch64), 8-byte MAXALIGN: PostgreSQL writes the struct as laid out in
 * memory, so the byte order and padding are those of the machine. holdfast reads the 64-bit
 * little-endian layout only; WAL from a big-endian machine is recognised and refused with its own
 * message, and 32-bit builds (MAXALIGN 4, no padding at 20) are not supported.
 *
 * ```
 * XLogPageHeaderData (every page; SizeOfXLogShortPHD = MAXALIGN(20) = 24)
 *   off size field
 *     0    2 xlp_magic        uint16  WAL format version (XLOG_PAGE_MAGIC)
 *     2    2 xlp_info         uint16  flags: 0x0001 XLP_FIRST_IS_CONTRECORD, 0x0002 XLP_LONG_HEADER,
 *                                     0x0004 XLP_BKP_REMOVABLE (12–13) / XLP_FIRST_IS_OVERWRITE_CONTRECORD (14+)
 *     4    4 xlp_tli          uint32  timeline of the first record on the page
 *     8    8 xlp_pageaddr     uint64  LSN of this page (8-aligned, so no padding before it)
 *    16    4 xlp_rem_len      uint32  bytes of a record continued from the previous page
 *    20    4 (padding)                sizeof(XLogPageHeaderData) is 24: the struct's alignment is 8
 * XLogLongPageHeaderData (first page of each segment; SizeOfXLogLongPHD = MAXALIGN(40) = 40)
 *     0   24 std              XLogPageHeaderData, padding included
 *    24    8 xlp_sysid        uint64  system identifier from pg_control
 *    32    4 xlp_seg_size     uint32  wal_segment_size, as a cross-check
 *    36    4 xlp_xlog_blcksz  uint32  XLOG_BLCKSZ (WAL page size), as a cross-check
 * ```
 * Verified on a segment written by PostgreSQL 15 (Debian 15, `initdb -k`): bytes
 * `10 d1 | 02 00 | 01 00 00 00 | 00 00 00 01 00 00 00 00 | 00 00 00 00 | 00 00 00 00 |
 * <sysid, 8> | 00 00 00 01 | 00 20 00 00` for 000000010000000000000001 (magic 0xD110, long header,
 * timeline 1, page address 0/1000000, 16 MiB segments, 8 KiB pages); see header-pg.test.ts.
 *
 * ## Timelines
 * `xlp_tli` of a segment's first page may be *lower* than the timeline in the file name: at a
 * timeline switch in the middle of a segment, PostgreSQL starts the new timeline's file as a copy
 * of the old timeline's segment up to the switch point (XLogInitNewTimeline -> XLogFileCopy), so
 * its first page keeps the old timeline. (Observed on PostgreSQL 15: after promotion at 0/1769098,
 * 000000020000000000000001 has xlp_tli = 1.) So `checkSegment` accepts header timeline <= name
 * timeline and refuses only a header timeline *later* than the name's, which PostgreSQL never
 * writes (its reader rejects it as "out-of-sequence timeline ID").
 */
import { WalFormatError, WalMismatchError } from './errors.js';
import { WAL_SEG_SIZE_MAX, WAL_SEG_SIZE_MIN, formatLsn, formatSize, isValidSegSize, parseSegmentName } from './names.js';

export const WAL_SHORT_HEADER_SIZE = 24;
export const WAL_LONG_HEADER_SIZE = 40;

export const XLP_FIRST_IS_CONTRECORD = 0x0001;
export const XLP_LONG_HEADER = 0x0002;
/** XLP_BKP_REMOVABLE in 12–13, XLP_FIRST_IS_OVERWRITE_CONTRECORD from 14. */
export const XLP_FLAG_0004 = 0x0004;
export const XLP_ALL_FLAGS = 0x0007;

/** WAL page sizes PostgreSQL can be built with (--with-wal-blocksize: 1–64 KiB). */
export const WAL_BLOCK_SIZE_MIN = 1024;
export const WAL_BLOCK_SIZE_MAX = 64 * 1024;

/**
 * XLOG_PAGE_MAGIC per supported PostgreSQL major version. It changes whenever the WAL format
 * changes, i.e. (so far) once per major release, and is the same in every minor release.
 *
 * Sources (read through the code search; values checked against each other):
 * - 12 0xD101, 13 0xD106, 14 0xD10D, 15 0xD110: pgBackRest src/postgres/interface/version.vendor.h
 *   (per-version copies of xlog_internal.h, commit c5820225), which also gives the older values
 *   below.
 * - 16 0xD113, 17 0xD116: third-party vendored copies of xlog_internal.h (a multi-version header
 *   with `#if PG_VERSION_NUM >= 170000 ... 0xD116 #elif >= 160000 ... 0xD113 #elif >= 150000
 *   ... 0xD110 #elif >= 140000 ... 0xD10D #elif >= 130000 ... 0xD106`, agreeing with pgBackRest
 *   where they overlap, and separate REL_16 / REL_17 copies).
 * - 18 0xD118: several vendored copies of the PostgreSQL 18 header (postgres/postgres master is
 *   already 0xD120, the development version).
 * - 15 verified on a real segment on this machine (Debian postgresql-15): see header-pg.test.ts.
 */
export const WAL_PAGE_MAGIC: ReadonlyMap<number, number> = new Map([
  [0xd101, 12],
  [0xd106, 13],
  [0xd10d, 14],
  [0xd110, 15],
  [0xd113, 16],
  [0xd116, 17],
  [0xd118, 18],
]);

/** Magic values of releases holdfast does not support, only to name them in error messages. */
const OLD_PAGE_MAGIC: ReadonlyMap<number, string> = new Map([
  [0xd064, '9.0'],
  [0xd066, '9.1'],
  [0xd071, '9.2'],
  [0xd075, '9.3'],
  [0xd07e, '9.4'],
  [0xd087, '9.5'],
  [0xd093, '9.6'],
  [0xd097, '10'],
  [0xd098, '11'],
]);

/** The PostgreSQL major version whose WAL has this page magic, or undefined. */
export function pgVersionOfMagic(magic: number): number | undefined {
  return WAL_PAGE_MAGIC.get(magic);
}

/** The page magic of a PostgreSQL major version (12, 13, …), or undefined. */
export function magicOfPgVersion(pgVersion: number): number | undefined {
  for (const [magic, v] of WAL_PAGE_MAGIC) if (v === pgVersion) return magic;
  return undefined;
}

export interface WalHeader {
  /** xlp_magic. */
  readonly magic: number;
  /** PostgreSQL major version the magic belongs to. */
  readonly pgVersion: number;
  /** xlp_info flag bits (XLP_LONG_HEADER always set). */
  readonly info: number;
  /** xlp_tli: timeline of the first record on the page. */
  readonly timeline: number;
  /** xlp_pageaddr: LSN of the first byte of the segment. */
  readonly pageAddress: bigint;
  /** xlp_rem_len: bytes of a record continued from the previous segment. */
  readonly remLen: number;
  /** xlp_sysid: the cluster's system identifier (pg_controldata "Database system identifier"). */
  readonly systemId: bigint;
  /** xlp_seg_size: wal_segment_size in bytes. */
  readonly segSize: number;
  /** xlp_xlog_blcksz: WAL page size in bytes. */
  readonly blockSize: number;
}

const hex4 = (n: number): string => `0x${n.toString(16).toUpperCase().padStart(4, '0')}`;

function knownMagics(): string {
  return [...WAL_PAGE_MAGIC].map(([m, v]) => `${hex4(m)} = ${v}`).join(', ');
}

function isPow2Between(n: number, min: number, max: number): boolean {
  return Number.isInteger(n) && n >= min && n <= max && (n & (n - 1)) === 0;
}

/**
 * Read and validate the long page header at the start of a WAL segment. Throws `WalFormatError`:
 * 'truncated' (fewer than 40 bytes), 'unknown-magic' (not WAL of PostgreSQL 12–18: zeros,
 * another file type, an older release, a big-endian machine), 'no-long-header', 'invalid-info-bits',
 * 'invalid-timeline', 'implausible-seg-size', 'implausible-block-size', 'misaligned-page-address'.
 */
export function parseWalHeader(buf: Uint8Array): WalHeader {
  if (!(buf instanceof Uint8Array)) throw new TypeError('parseWalHeader needs a Uint8Array or Buffer');
  if (buf.length < WAL_LONG_HEADER_SIZE) {
    throw new WalFormatError('truncated', `not a WAL segment: ${buf.length} bytes, but a WAL segment starts with a ${WAL_LONG_HEADER_SIZE}-byte long page header`, { length: buf.length });
  }
  const v = new DataView(buf.buffer, buf.byteOffset, WAL_LONG_HEADER_SIZE);
  const magic = v.getUint16(0, true);
  const pgVersion = WAL_PAGE_MAGIC.get(magic);
  if (pgVersion === undefined) throw unknownMagic(buf, v, magic);

  const info = v.getUint16(2, true);
  if ((info & XLP_LONG_HEADER) === 0) {
    throw new WalFormatError('no-long-header', `not the start of a WAL segment: the page header has no long-header flag (xlp_info ${hex4(info)}); this is a later page of a segment, or a damaged file`, { info });
  }
  if ((info & ~XLP_ALL_FLAGS) !== 0) {
    throw new WalFormatError('invalid-info-bits', `damaged WAL segment header: xlp_info ${hex4(info)} has bits PostgreSQL never sets (valid: ${hex4(XLP_ALL_FLAGS)})`, { info });
  }
  const timeline = v.getUint32(4, true);
  if (timeline === 0) throw new WalFormatError('invalid-timeline', 'damaged WAL segment header: timeline 0 (timelines start at 1)', { timeline });
  const pageAddress = v.getBigUint64(8, true);
  const remLen = v.getUint32(16, true);
  const systemId = v.getBigUint64(24, true);
  const segSize = v.getUint32(32, true);
  const blockSize = v.getUint32(36, true);
  if (!isValidSegSize(segSize)) {
    throw new WalFormatError('implausible-seg-size', `damaged WAL segment header: segment size ${segSize} is not a power of two from ${formatSize(WAL_SEG_SIZE_MIN)} to ${formatSize(WAL_SEG_SIZE_MAX)}`, { segSize });
  }
  if (!isPow2Between(blockSize, WAL_BLOCK_SIZE_MIN, WAL_BLOCK_SIZE_MAX)) {
    throw new WalFormatError('implausible-block-size', `damaged WAL segment header: WAL page size ${blockSize} is not a power of two from 1 KiB to 64 KiB`, { blockSize });
  }
  if (pageAddress % BigInt(segSize) !== 0n) {
    throw new WalFormatError(
      'misaligned-page-address',
      `damaged WAL segment header: a long page header starts a segment, but its page address ${formatLsn(pageAddress)} is not a multiple of the segment size ${formatSize(segSize)}`,
      { pageAddress: formatLsn(pageAddress), segSize },
    );
  }
  return { magic, pgVersion, info, timeline, pageAddress, remLen, systemId, segSize, blockSize };
}

function unknownMagic(buf: Uint8Array, v: DataView, magic: number): WalFormatError {
  const data = { magic: hex4(magic) };
  if (buf.subarray(0, WAL_LONG_HEADER_SIZE).every((b) => b === 0)) {
    return new WalFormatError('unknown-magic', 'not a WAL segment: its header is all zeros (a pre-allocated or recycled file PostgreSQL never wrote, or a damaged one)', data);
  }
  const swapped = v.getUint16(0, false);
  const swappedVersion = WAL_PAGE_MAGIC.get(swapped) ?? OLD_PAGE_MAGIC.get(swapped);
  if (swappedVersion !== undefined) {
    return new WalFormatError('unknown-magic', `unsupported WAL segment: PostgreSQL ${swappedVersion} WAL from a big-endian machine (magic ${hex4(swapped)} stored big-endian); holdfast reads little-endian WAL only`, { ...data, bigEndian: true });
  }
  const old = OLD_PAGE_MAGIC.get(magic);
  if (old !== undefined) {
    return new WalFormatError('unknown-magic', `unsupported WAL segment: written by PostgreSQL ${old} (magic ${hex4(magic)}); holdfast supports PostgreSQL 12 and later`, { ...data, pgVersion: old });
  }
  return new WalFormatError('unknown-magic', `not a PostgreSQL WAL segment: page magic ${hex4(magic)} is not one holdfast knows (${knownMagics()})`, data);
}

export interface SegmentExpectation {
  /** The cluster's system identifier; a different one means another cluster's WAL. */
  readonly systemId?: bigint | undefined;
  /** The file's name (segment or `.partial`): its start LSN must be the header's page address. */
  readonly segmentName?: string | undefined;
  /** The cluster's wal_segment_size; defaults to the header's for interpreting `segmentName`. */
  readonly segSize?: number | undefined;
  /** The cluster's PostgreSQL major version. */
  readonly pgVersion?: number | undefined;
  /** The size of the whole file, when the caller knows it: must equal the segment size. */
  readonly fileSize?: number | undefined;
}

/**
 * `parseWalHeader` plus the checks that tie the file to its name and cluster, each failure a
 * distinct error, in this order:
 * 1. `WalFormatError('invalid-name')` when `segmentName` is not a segment or `.partial` name
 *    (history and backup history files have no page header) — before the bytes are read;
 * 2. any `parseWalHeader` error;
 * 3. `WalMismatchError` 'system-id' (another cluster: the most likely and most important thing
 *    to report, so first), 'seg-size', 'pg-version';
 * 4. `WalFormatError('wrong-file-size')` when `fileSize` is given and is not the segment size;
 * 5. `WalMismatchError` 'page-address' (header is for another segment than the name), then
 *    'timeline' (header timeline later than the name's; an earlier one is legitimate, see above).
 * Returns the parsed header.
 */
export function checkSegment(buf: Uint8Array, expected: SegmentExpectation = {}): WalHeader {
  if (expected.segmentName !== undefined) {
    // Refuse a name that cannot be a segment before looking at the bytes: 1 MiB segments allow the
    // widest seg field, so this accepts every name that is a segment under some segment size.
    parseSegmentName(expected.segmentName, WAL_SEG_SIZE_MIN);
  }
  const h = parseWalHeader(buf);
  const what = expected.segmentName ?? 'WAL segment';
  if (expected.systemId !== undefined && h.systemId !== expected.systemId) {
    throw new WalMismatchError(
      'system-id',
      `${what} belongs to another cluster: system identifier ${h.systemId}, expected ${expected.systemId}`,
      h.systemId.toString(),
      expected.systemId.toString(),
      { file: what },
    );
  }
  if (expected.segSize !== undefined && h.segSize !== expected.segSize) {
    throw new WalMismatchError(
      'seg-size',
      `${what}: segment size ${formatSize(h.segSize)} in its header, expected ${formatSize(expected.segSize)} (the cluster's wal_segment_size)`,
      String(h.segSize),
      String(expected.segSize),
      { file: what },
    );
  }
  if (expected.pgVersion !== undefined && h.pgVersion !== expected.pgVersion) {
    throw new WalMismatchError('pg-version', `${what}: written by PostgreSQL ${h.pgVersion} (magic ${hex4(h.magic)}), but the cluster is PostgreSQL ${expected.pgVersion}`, String(h.pgVersion), String(expected.pgVersion), {
      file: what,
    });
  }
  if (expected.fileSize !== undefined && expected.fileSize !== h.segSize) {
    throw new WalFormatError('wrong-file-size', `${what}: the file is ${expected.fileSize} bytes, but its header declares ${formatSize(h.segSize)} segments (truncated or padded copy?)`, {
      file: what,
      fileSize: expected.fileSize,
      segSize: h.segSize,
    });
  }
  if (expected.segmentName !== undefined) {
    const segSize = expected.segSize ?? h.segSize;
    const name = parseSegmentName(expected.segmentName, segSize);
    const start = name.segNo * BigInt(segSize);
    if (h.pageAddress !== start) {
      throw new WalMismatchError(
        'page-address',
        `${what}: its header is for the segment starting at ${formatLsn(h.pageAddress)}, but the name says ${formatLsn(start)} (renamed, copied over from another segment, or damaged)`,
        formatLsn(h.pageAddress),
        formatLsn(start),
        { file: what },
      );
    }
    if (h.timeline > name.timeline) {
      throw new WalMismatchError(
        'timeline',
        `${what}: its header is on timeline ${h.timeline}, later than timeline ${name.timeline} of its name; PostgreSQL never writes a later timeline's WAL into an earlier timeline's file`,
        String(h.timeline),
        String(name.timeline),
        { file: what },
      );
    }
  }
  return h;
}
