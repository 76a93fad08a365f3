/**
 * Output for people and machines: results on stdout (text or JSON), logs and progress on stderr.
 * Progress is a single status line redrawn a few times a second, shown only when stderr is a
 * terminal (or --progress always) and never with --json or --quiet.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const LEVELS: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export class Logger {
  private statusShown = false;
  /** `stream`: stderr unless given. Looked up only when something is written: creating a stdio stream costs a short-lived command (archive-push, exit 0 in silence) a few ms. */
  constructor(
    private readonly level: LogLevel,
    private readonly given?: NodeJS.WriteStream,
  ) {}

  private get stream(): NodeJS.WriteStream {
    return this.given ?? process.stderr;
  }

  enabled(level: LogLevel): boolean {
    return LEVELS[level] <= LEVELS[this.level];
  }

  log(level: LogLevel, message: string): void {
    if (!this.enabled(level)) return;
    this.clearStatus();
    const prefix = level === 'info' ? '' : `${level === 'warn' ? 'warning' : level}: `;
    this.stream.write(`${prefix}${message}\n`);
  }

  /** The "what to do" line after an error; shown at every level. */
  hint(m: string): void {
    this.clearStatus();
    this.stream.write(`hint: ${m}\n`);
  }

  error(m: string): void {
    this.log('error', m);
  }
  warn(m: string): void {
    this.log('warn', m);
  }
  info(m: string): void {
    this.log('info', m);
  }
  debug(m: string): void {
    this.log('debug', m);
  }

  /** Draw a status line (progress); the next log line or clearStatus() removes it. */
  status(line: string): void {
    const width = this.stream.columns || 100;
    this.stream.write(`\r\x1b[2K${line.length > width - 1 ? line.slice(0, width - 2) + '…' : line}`);
    this.statusShown = true;
  }

  clearStatus(): void {
    if (this.statusShown) {
      this.stream.write('\r\x1b[2K');
      this.statusShown = false;
    }
  }
}

export class Ticker {
  private timer: NodeJS.Timeout | undefined;
  private readonly started = Date.now();

  constructor(
    private readonly logger: Logger,
    private readonly render: (elapsedMs: number) => string,
    enabled: boolean,
    intervalMs = 250,
  ) {
    if (enabled) {
      this.timer = setInterval(() => this.logger.status(this.render(Date.now() - this.started)), intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.logger.clearStatus();
  }
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** "12.3 MiB/s, ETA 1m20s" from done/total bytes and elapsed time. */
export function rateAndEta(done: number, total: number | undefined, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (done / elapsedMs) * 1000 : 0;
  let s = `${formatBytes(rate)}/s`;
  if (total !== undefined && total > 0 && rate > 0 && done <= total) s += `, ETA ${formatDuration(((total - done) / rate) * 1000)}`;
  return s;
}
