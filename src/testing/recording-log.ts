/** A logger for tests that records each line with its level. Used by *.test.ts only. */
export class RecordingLog {
  readonly lines: Array<{ level: string; msg: string }> = [];
  info = (msg: string): void => void this.lines.push({ level: 'info', msg });
  warn = (msg: string): void => void this.lines.push({ level: 'warn', msg });
  debug = (msg: string): void => void this.lines.push({ level: 'debug', msg });
  at(level: string): string[] {
    return this.lines.filter((l) => l.level === level).map((l) => l.msg);
  }
}
