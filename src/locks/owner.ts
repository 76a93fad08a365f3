/**
 * Who holds a lock, and whether that holder provably still exists.
 *
 * A lock records its owner as: host name, machine id (`/etc/machine-id`), boot id
 * (`/proc/sys/kernel/random/boot_id`), PID namespace (`/proc/self/ns/pid`), PID and the process
 * start time (field 22 of `/proc/PID/stat`, clock ticks since boot). PID plus start time names one
 * process for the life of a boot even when PIDs are reused, so on the same host, boot and PID
 * namespace the owner's liveness is a fact, not a guess:
 *
 * - `alive`: `/proc/PID/stat` exists with the same start time and the process is not a zombie.
 * - `dead`: same host (name and machine id) and boot, and that PID with that start time is gone
 *   (or a zombie: killed, waiting to be reaped); or same host (name and machine id) but another
 *   boot id: the machine rebooted since, so every process of the old boot is gone.
 * - `unknown`: another host, another PID namespace (a container sharing the host), or this host
 *   without a machine id and another boot id. Such a lock is judged by its heartbeat alone.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

export interface LockOwner {
  readonly host: string;
  /** /etc/machine-id, '' when unreadable. */
  readonly machineId: string;
  readonly bootId: string;
  /** e.g. "pid:[4026531836]", '' when unreadable. */
  readonly pidNs: string;
  readonly pid: number;
  /** Process start time in clock ticks since boot, as a decimal string ('' when unreadable). */
  readonly startTime: string;
}

export type Liveness = 'alive' | 'dead' | 'unknown';

function readTrim(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Start time (field 22) and state (field 3) from /proc/PID/stat; undefined when no such process. */
export function procStat(pid: number | 'self'): { startTime: string; state: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself contain ') ': split after the last.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); field 22 is fields[19].
  const startTime = fields[19];
  if (!startTime) return undefined;
  return { startTime, state: fields[0] ?? '' };
}

let self: LockOwner | undefined;

export function currentOwner(): LockOwner {
  if (self) return self;
  let pidNs = '';
  try {
    pidNs = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    // no /proc or no namespaces: liveness of other owners stays unknown unless pidNs matches ''
  }
  self = {
    host: os.hostname(),
    machineId: readTrim('/etc/machine-id'),
    bootId: readTrim('/proc/sys/kernel/random/boot_id'),
    pidNs,
    pid: process.pid,
    startTime: procStat('self')?.startTime ?? '',
  };
  return self;
}

/** Whether `owner` still runs, as far as this process can prove it (see the module comment). */
export function ownerLiveness(owner: LockOwner, me: LockOwner = currentOwner()): Liveness {
  if (owner.host !== me.host || owner.machineId !== me.machineId) return 'unknown';
  if (owner.bootId !== me.bootId) return owner.machineId !== '' && me.bootId !== '' ? 'dead' : 'unknown';
  if (owner.pidNs !== me.pidNs || me.bootId === '' || owner.startTime === '') return 'unknown';
  if (owner.pid === me.pid) return owner.startTime === me.startTime ? 'alive' : 'dead';
  const st = procStat(owner.pid);
  if (!st || st.startTime !== owner.startTime || st.state === 'Z' || st.state === 'X') return 'dead';
  return 'alive';
}

/** "PID 1234 on db1" for messages. */
export function describeOwner(owner: LockOwner): string {
  return `PID ${owner.pid} on ${owner.host}`;
}

/** Parse an owner from untrusted JSON; undefined when malformed. */
export function parseOwner(v: unknown): LockOwner | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const host = str('host');
  const machineId = str('machineId');
  const bootId = str('bootId');
  const pidNs = str('pidNs');
  const startTime = str('startTime');
  const pid = o['pid'];
  if (host === undefined || machineId === undefined || bootId === undefined || pidNs === undefined || startTime === undefined) return undefined;
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) return undefined;
  return { host, machineId, bootId, pidNs, pid, startTime };
}
