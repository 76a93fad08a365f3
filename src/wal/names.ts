/**
 * PostgreSQL WAL-archive file names, LSNs and timeline history files (PostgreSQL 12–17; the
 * naming has not changed since 9.x). Pure functions, no I/O.
 *
 * ## Names (src/include/access/xlog_internal.h: XLogFileName, TLHistoryFileName, BackupHistoryFileName)
 *
 * | kind      | form                                   | example                                     |
 * |-----------|----------------------------------------|---------------------------------------------|
 * | `segment` | `TTTTTTTTLLLLLLLLSSSSSSSS`             | `000000010000000A000000FF`                  |
 * | `partial` | segment name + `.partial`              | `000000010000000A000000FF.partial`          |
 * | `history` | `TTTTTTTT.history`                     | `00000002.history`                          |
 * | `backup`  | segment name + `.OOOOOOOO.backup`      | `000000010000000A000000FF.00000028.backup`  |
 *
 * T = timeline, L = "log" (xlogid), S = segment within the log, O = byte offset of the backup's
 * start LSN within its segment; every field is 8 upper-case hex digits, as PostgreSQL writes them.
 * The segment number is `segNo = log * (2^32 / segSize) + seg`, so for 16 MiB segments S runs
 * 00000000..000000FF and then L increments; for 1 MiB 000..FFF; for 1 GiB 0..3. A name whose S is
 * out of range for the segment size, whose timeline is 0, that has lower-case hex, any other
 * suffix, a directory part ('/', '..') or anything else is **not a WAL-archive name**:
 * `parseWalName` returns `undefined` for it and never throws (except for an invalid `segSize`
 * argument, a programming error); `parseWalNameStrict` throws a `WalFormatError` saying why.
 *
 * Segment numbers and LSNs are `bigint` (an LSN is a 64-bit byte position in the WAL stream).
 *
 * ## LSNs
 * Text form `%X/%X` — high and low 32 bits in hex, e.g. `16/B374D848` — as `pg_lsn` prints it.
 * Segment `segNo` holds LSNs `[segNo * segSize, (segNo + 1) * segSize)`.
 *
 * ## Timeline history files (src/backend/access/transam/timeline.c)
 * One line per ancestor timeline: `parentTLI <TAB> switchpoint LSN <TAB> reason`, in increasing
 * timeline order; blank lines and lines starting with `#` (after optional white space) are
 * ignored. Timeline `parentTLI` holds the WAL up to (not including) `switchpoint`.
 */
import { WalFormatError } from './errors.js';

export const WAL_SEG_SIZE_DEFAULT = 16 * 1024 * 1024;
export const WAL_SEG_SIZE_MIN = 1024 * 1024;
export const WAL_SEG_SIZE_MAX = 1024 * 1024 * 1024;
export const MAX_TIMELINE = 0xffffffff;
export const MAX_LSN = 0xffffffffffffffffn;

/** Length of a segment name (XLOG_FNAME_LEN). */
export const SEGMENT_NAME_LEN = 24;

/** PostgreSQL's IsValidWalSegSize: a power of two from 1 MiB to 1 GiB. */
export function isValidSegSize(segSize: number): boolean {
  return Number.isInteger(segSize) && segSize >= WAL_SEG_SIZE_MIN && segSize <= WAL_SEG_SIZE_MAX && (segSize & (segSize - 1)) === 0;
}

function checkSegSize(segSize: number): bigint {
  if (!isValidSegSize(segSize)) {
    throw new WalFormatError('invalid-seg-size', `invalid WAL segment size ${segSize}: must be a power of two from 1 MiB to 1 GiB`, { segSize });
  }
  return BigInt(segSize);
}

/** Segments per "log" (XLogSegmentsPerXLogId): 2^32 / segSize, e.g. 256 for 16 MiB. */
export function segmentsPerLogId(segSize: number = WAL_SEG_SIZE_DEFAULT): number {
  checkSegSize(segSize);
  return 0x100000000 / segSize;
}

/** The largest segment number (the segment that ends at LSN 2^64). */
export function maxSegNo(segSize: number = WAL_SEG_SIZE_DEFAULT): bigint {
  return (MAX_LSN + 1n) / checkSegSize(segSize) - 1n;
}

function isTimeline(tli: number): boolean {
  return Number.isInteger(tli) && tli >= 1 && tli <= MAX_TIMELINE;
}

function checkTimeline(tli: number): void {
  if (!isTimeline(tli)) throw new WalFormatError('out-of-range', `timeline ${tli} is out of range: must be an integer from 1 to ${MAX_TIMELINE}`, { timeline: String(tli) });
}

function checkSegNo(segNo: bigint, segSize: number): void {
  const max = maxSegNo(segSize);
  if (typeof segNo !== 'bigint' || segNo < 0n || segNo > max) {
    throw new WalFormatError('out-of-range', `segment number ${String(segNo)} is out of range for ${formatSize(segSize)} segments (0 to ${max})`, { segNo: String(segNo), segSize });
  }
}

function checkLsn(lsn: bigint): void {
  if (typeof lsn !== 'bigint' || lsn < 0n || lsn > MAX_LSN) throw new WalFormatError('out-of-range', `LSN ${String(lsn)} is out of the 64-bit range`, { lsn: String(lsn) });
}

function hex8(n: number | bigint): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

/** `16777216` -> `16 MiB`, for messages. */
export function formatSize(bytes: number): string {
  if (bytes >= 1 << 30 && bytes % (1 << 30) === 0) return `${bytes / (1 << 30)} GiB`;
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes / (1 << 10)} KiB`;
  return `${bytes} bytes`;
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

/** A WAL segment (`kind: 'segment'`) or a `.partial` segment. */
export interface WalSegmentName {
  readonly kind: 'segment' | 'partial';
  readonly timeline: number;
  readonly segNo: bigint;
}

/** A timeline history file `TTTTTTTT.history`. */
export interface WalHistoryName {
  readonly kind: 'history';
  readonly timeline: number;
}

/** A backup history file; `offset` is the backup's start LSN modulo the segment size. */
export interface WalBackupName {
  readonly kind: 'backup';
  readonly timeline: number;
  readonly segNo: bigint;
  readonly offset: number;
}

export type WalName = WalSegmentName | WalHistoryName | WalBackupName;

const SEGMENT_RE = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(?:(\.partial)|\.([0-9A-F]{8})\.backup)?$/;
const HISTORY_RE = /^([0-9A-F]{8})\.history$/;
/** MAXFNAMELEN: nothing longer can be one of these names; checked first so huge inputs cost nothing. */
const MAX_NAME_LEN = 64;

/** Parse `name`, or say in a sentence why it is not a WAL-archive name. */
function explainName(name: unknown, segSize: number): WalName | string {
  const segSizeBig = checkSegSize(segSize);
  if (typeof name !== 'string') return `a file name must be a string, got ${typeof name}`;
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LEN) return `the name is ${name.length} characters long; WAL-archive names have at most ${MAX_NAME_LEN}`;
  if (name.includes('/') || name.includes('\\') || name.includes('\0')) return 'the name contains a path separator or NUL; pass the base name of the file';
  const h = HISTORY_RE.exec(name);
  if (h) {
    const timeline = parseInt(h[1]!, 16);
    if (timeline === 0) return 'timeline 0 does not exist (timelines start at 1)';
    return { kind: 'history', timeline };
  }
  const m = SEGMENT_RE.exec(name);
  if (!m) {
    if (/^[0-9a-fA-F]{24}/.test(name) && /[a-f]/.test(name.slice(0, SEGMENT_NAME_LEN))) return 'the hex digits must be upper case, as PostgreSQL writes them';
    return 'expected a 24-hex-digit WAL segment name, optionally with .partial or .OOOOOOOO.backup, or TTTTTTTT.history';
  }
  const timeline = parseInt(m[1]!, 16);
  const log = parseInt(m[2]!, 16);
  const seg = parseInt(m[3]!, 16);
  if (timeline === 0) return 'timeline 0 does not exist (timelines start at 1)';
  const perLog = 0x100000000 / segSize;
  if (seg >= perLog) return `segment field ${m[3]} is out of range for ${formatSize(segSize)} segments (00000000 to ${hex8(perLog - 1)})`;
  const segNo = BigInt(log) * BigInt(perLog) + BigInt(seg);
  if (m[4] !== undefined) return { kind: 'partial', timeline, segNo };
  if (m[5] !== undefined) {
    const offset = parseInt(m[5], 16);
    if (BigInt(offset) >= segSizeBig) return `backup start offset ${m[5]} is beyond the end of a ${formatSize(segSize)} segment`;
    return { kind: 'backup', timeline, segNo, offset };
  }
  return { kind: 'segment', timeline, segNo };
}

/**
 * Parse a WAL-archive file name. Returns `undefined` for anything that is not one (see the module
 * comment); throws only `WalFormatError('invalid-seg-size')` for an invalid `segSize`.
 */
export function parseWalName(name: string, segSize: number = WAL_SEG_SIZE_DEFAULT): WalName | undefined {
  const r = explainName(name, segSize);
  return typeof r === 'string' ? undefined : r;
}

/** Like `parseWalName`, but throws `WalFormatError('invalid-name')` explaining what is wrong. */
export function parseWalNameStrict(name: string, segSize: number = WAL_SEG_SIZE_DEFAULT): WalName {
  const r = explainName(name, segSize);
  if (typeof r === 'string') {
    const shown = typeof name === 'string' ? JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name) : String(name);
    throw new WalFormatError('invalid-name', `${shown} is not a WAL segment, .partial, timeline history or backup history file name: ${r}`, { name: typeof name === 'string' ? name.slice(0, 200) : String(name) });
  }
  return r;
}

/** The kind of WAL-archive file `name` is, or `undefined` if it is none. */
export function classifyWalName(name: string, segSize: number = WAL_SEG_SIZE_DEFAULT): WalFileKind | undefined {
  return parseWalName(name, segSize)?.kind;
}

/** Parse a name that must be a segment or `.partial` segment; throws `WalFormatError('invalid-name')` otherwise. */
export function parseSegmentName(name: string, segSize: number = WAL_SEG_SIZE_DEFAULT): WalSegmentName {
  const p = parseWalNameStrict(name, segSize);
  if (p.kind !== 'segment' && p.kind !== 'partial') {
    throw new WalFormatError('invalid-name', `${name} is a ${p.kind === 'history' ? 'timeline history' : 'backup history'} file, not a WAL segment`, { name, kind: p.kind });
  }
  return p;
}

/** `XLogFileName`: the segment name for (timeline, segNo). */
export function segmentName(timeline: number, segNo: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  checkTimeline(timeline);
  checkSegNo(segNo, segSize);
  const perLog = BigInt(0x100000000 / segSize);
  return hex8(timeline) + hex8(segNo / perLog) + hex8(segNo % perLog);
}

/** The `.partial` name for (timeline, segNo). */
export function partialSegmentName(timeline: number, segNo: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  return `${segmentName(timeline, segNo, segSize)}.partial`;
}

/** `TLHistoryFileName`: `TTTTTTTT.history`. */
export function historyFileName(timeline: number): string {
  checkTimeline(timeline);
  return `${hex8(timeline)}.history`;
}

/** `BackupHistoryFileName`: the backup history file name for a backup starting at `startLsn`. */
export function backupHistoryFileName(timeline: number, startLsn: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  checkLsn(startLsn);
  const size = checkSegSize(segSize);
  return `${segmentName(timeline, startLsn / size, segSize)}.${hex8(startLsn % size)}.backup`;
}

/** Format a parsed name back; `formatWalName(parseWalName(n, s)!, s) === n` for every valid name. */
export function formatWalName(name: WalName, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  switch (name.kind) {
    case 'segment':
      return segmentName(name.timeline, name.segNo, segSize);
    case 'partial':
      return partialSegmentName(name.timeline, name.segNo, segSize);
    case 'history':
      return historyFileName(name.timeline);
    case 'backup': {
      if (!Number.isInteger(name.offset) || name.offset < 0 || name.offset >= segSize) {
        throw new WalFormatError('out-of-range', `backup offset ${name.offset} is out of range for ${formatSize(segSize)} segments`, { offset: name.offset, segSize });
      }
      return `${segmentName(name.timeline, name.segNo, segSize)}.${hex8(name.offset)}.backup`;
    }
  }
}

/**
 * The name of the segment after `name` (a segment or `.partial` name) on the same timeline:
 * `...000000FE` -> `...000000FF` -> next log `...00000001` + `00000000` for 16 MiB segments.
 * Throws `WalFormatError` ('invalid-name' for other names, 'out-of-range' after the last segment).
 */
export function nextSegmentName(name: string, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  const s = parseSegmentName(name, segSize);
  if (s.segNo >= maxSegNo(segSize)) throw new WalFormatError('out-of-range', `${name} is the last possible WAL segment; there is no next one`, { name });
  return segmentName(s.timeline, s.segNo + 1n, segSize);
}

/** The backup's start LSN encoded in a backup history file name. */
export function backupStartLsn(name: WalBackupName, segSize: number = WAL_SEG_SIZE_DEFAULT): bigint {
  return name.segNo * checkSegSize(segSize) + BigInt(name.offset);
}

// ---------------------------------------------------------------------------------------------
// LSNs
// ---------------------------------------------------------------------------------------------

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/**
 * Parse `16/B374D848` (1–8 hex digits each side, either case, as `pg_lsn` accepts) to a bigint.
 * Throws `WalFormatError('invalid-lsn')`.
 */
export function parseLsn(text: string): bigint {
  const m = typeof text === 'string' && text.length <= 17 ? LSN_RE.exec(text) : null;
  if (!m) {
    const shown = typeof text === 'string' ? JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text) : String(text);
    throw new WalFormatError('invalid-lsn', `${shown} is not an LSN: expected two hexadecimal numbers of 1 to 8 digits separated by '/', like 16/B374D848`, { text: String(text).slice(0, 100) });
  }
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** Format an LSN as PostgreSQL does (`%X/%X`: upper case, no padding): `16/B374D848`, `0/0`. */
export function formatLsn(lsn: bigint): string {
  checkLsn(lsn);
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function compareLsn(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `XLByteToSeg`: the number of the segment that contains the byte at `lsn`. */
export function segNoOfLsn(lsn: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): bigint {
  checkLsn(lsn);
  return lsn / checkSegSize(segSize);
}

/**
 * `XLByteToPrevSeg`: the segment holding the byte *before* `lsn` — the last segment needed for WAL
 * that ends at `lsn` (a backup's stop LSN, a record's end). `lsn` must be > 0.
 */
export function segNoOfEndLsn(lsn: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): bigint {
  checkLsn(lsn);
  if (lsn === 0n) throw new WalFormatError('out-of-range', 'LSN 0/0 ends no WAL; there is no segment before it', { lsn: '0/0' });
  return (lsn - 1n) / checkSegSize(segSize);
}

/** The name of the segment on `timeline` that contains `lsn`. */
export function segmentNameOfLsn(timeline: number, lsn: bigint, segSize: number = WAL_SEG_SIZE_DEFAULT): string {
  return segmentName(timeline, segNoOfLsn(lsn, segSize), segSize);
}

/** LSN range `[start, end)` of a segment, given its number or its (segment or `.partial`) name. */
export function segmentLsnRange(segment: bigint | string, segSize: number = WAL_SEG_SIZE_DEFAULT): { start: bigint; end: bigint } {
  const size = checkSegSize(segSize);
  const segNo = typeof segment === 'string' ? parseSegmentName(segment, segSize).segNo : segment;
  checkSegNo(segNo, segSize);
  return { start: segNo * size, end: (segNo + 1n) * size };
}

// ---------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------

/** Order among names of one segment; a history file has no segment and sorts before them all (segNo -1). */
const KIND_RANK: Record<Exclude<WalFileKind, 'history'>, number> = { segment: 0, partial: 1, backup: 2 };

function cmp(a: bigint | number, b: bigint | number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Total order on file names for listings: WAL-archive names first, by timeline, then segment
 * number (a timeline's history file before its segments), then segment < `.partial` < backup
 * history (by offset); every other string after them, in code-unit order. For valid names this is
 * the same order as comparing the strings, but it does not rely on it.
 */
export function compareWalNames(a: string, b: string, segSize: number = WAL_SEG_SIZE_DEFAULT): number {
  const pa = parseWalName(a, segSize);
  const pb = parseWalName(b, segSize);
  if (!pa || !pb) {
    if (pa) return -1;
    if (pb) return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return (
    cmp(pa.timeline, pb.timeline) ||
    cmp(pa.kind === 'history' ? -1n : pa.segNo, pb.kind === 'history' ? -1n : pb.segNo) ||
    (pa.kind === 'history' || pb.kind === 'history' ? 0 : cmp(KIND_RANK[pa.kind], KIND_RANK[pb.kind])) ||
    cmp(pa.kind === 'backup' ? pa.offset : 0, pb.kind === 'backup' ? pb.offset : 0)
  );
}

/** A sorted copy of `names` (see `compareWalNames`). */
export function sortWalNames(names: readonly string[], segSize: number = WAL_SEG_SIZE_DEFAULT): string[] {
  checkSegSize(segSize);
  return [...names].sort((a, b) => compareWalNames(a, b, segSize));
}

// ---------------------------------------------------------------------------------------------
// Timeline history files
// ---------------------------------------------------------------------------------------------

/** One line of a timeline history file: `timeline` holds the WAL before `switchLsn`. */
export interface TimelineSwitch {
  /** The ancestor (parent) timeline. */
  readonly timeline: number;
  /** Where WAL left `timeline` for the next one (exclusive end of `timeline`'s WAL). */
  readonly switchLsn: bigint;
  /** Free text after the LSN (e.g. `no recovery target specified`, `before 2024-…`); may be empty. */
  readonly reason: string;
  /** 1-based line number in the file. */
  readonly line: number;
}

/**
 * Parse the contents of a timeline history file, as PostgreSQL's readTimeLineHistory does:
 * skip blank and `#` lines; each other line is a decimal timeline ID, white space, an LSN, and an
 * optional reason after more white space. Timeline IDs must increase strictly and, when
 * `childTimeline` (the timeline of the file's own name) is given, stay below it.
 *
 * Throws `WalFormatError` ('history-syntax' or 'history-order') naming the line and what was
 * expected there. Like PostgreSQL, it does not require switch points to be ordered.
 */
export function parseTimelineHistory(content: string | Uint8Array, childTimeline?: number): TimelineSwitch[] {
  if (childTimeline !== undefined) checkTimeline(childTimeline);
  const text = typeof content === 'string' ? content : new TextDecoder('utf-8', { fatal: false }).decode(content);
  const out: TimelineSwitch[] = [];
  const lines = text.split('\n');
  const err = (reason: 'history-syntax' | 'history-order', lineNo: number, line: string, what: string): WalFormatError =>
    new WalFormatError(reason, `timeline history line ${lineNo}: ${what} (line: ${JSON.stringify(line.length > 120 ? `${line.slice(0, 120)}…` : line)})`, { line: lineNo, text: line.slice(0, 200) });
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i]!;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const body = line.trimStart();
    if (body === '' || body.startsWith('#')) continue;
    const tm = /^[0-9]+/.exec(body);
    if (!tm) throw err('history-syntax', lineNo, line, 'expected a numeric timeline ID');
    const tliText = tm[0];
    const timeline = tliText.length > 10 ? Infinity : Number(tliText);
    if (!isTimeline(timeline)) throw err('history-syntax', lineNo, line, `timeline ID ${tliText} is out of range (1 to ${MAX_TIMELINE})`);
    let rest = body.slice(tliText.length);
    const ws = /^[ \t\v\f]+/.exec(rest);
    if (!ws) {
      throw err('history-syntax', lineNo, line, rest === '' ? 'expected a switch point LSN after the timeline ID' : 'expected white space after the timeline ID');
    }
    rest = rest.slice(ws[0].length);
    const lm = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)/.exec(rest);
    if (!lm) throw err('history-syntax', lineNo, line, 'expected a switch point LSN like 0/1769098 after the timeline ID');
    if (lm[1]!.length > 8 || lm[2]!.length > 8) throw err('history-syntax', lineNo, line, `switch point ${lm[0]} has more than 8 hex digits on a side`);
    const switchLsn = parseLsn(lm[0]);
    rest = rest.slice(lm[0].length);
    if (rest !== '' && !/^[ \t\v\f]/.test(rest)) throw err('history-syntax', lineNo, line, `unexpected ${JSON.stringify(rest[0])} right after the switch point`);
    const prev = out[out.length - 1];
    if (prev && timeline <= prev.timeline) {
      throw err('history-order', lineNo, line, `timeline IDs must increase: ${timeline} follows ${prev.timeline} (line ${prev.line})`);
    }
    if (childTimeline !== undefined && timeline >= childTimeline) {
      throw err('history-order', lineNo, line, `ancestor timeline ${timeline} is not below the history file's own timeline ${childTimeline}`);
    }
    out.push({ timeline, switchLsn, reason: rest.trim(), line: lineNo });
  }
  return out;
}

/**
 * The timeline whose WAL holds `lsn` on the way to `childTimeline` (PostgreSQL's
 * tliOfPointInHistory): the first ancestor whose switch point is after `lsn`, else the child.
 */
export function timelineOfLsn(history: readonly TimelineSwitch[], childTimeline: number, lsn: bigint): number {
  checkTimeline(childTimeline);
  checkLsn(lsn);
  let begin = 0n;
  for (const s of history) {
    if (lsn >= begin && lsn < s.switchLsn) return s.timeline;
    begin = s.switchLsn;
  }
  return childTimeline;
}
