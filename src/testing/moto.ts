/**
 * A real S3 API on loopback for the S3 driver's tests: `moto_server` (Python moto 5, installed with
 * the machine's Python; scripts/s3-deps.sh checks it). Used by *.test.ts only.
 *
 * startMoto() runs moto_server's main() as `-H 127.0.0.1 -p PORT` on a free port, with requests
 * handled one at a time (see SERIALISED_MOTO; the plain `moto_server` script on PATH when python3
 * cannot import moto), waits until it answers, and creates the buckets asked for. moto keeps
 * everything in memory: stopping it forgets every bucket. It honours conditional writes
 * (`If-None-Match: *` answers 412 on PutObject and CompleteMultipartUpload, but not on
 * CopyObject), checks Content-MD5, and accepts any access key (signatures are not verified).
 *
 * Every wait is bounded; a server still running when the process exits (a failed test) is killed
 * by an exit handler.
 *
 * @example
 * ```ts
 * import { after, before, describe, it } from 'node:test';
 * import { motoSkip, startMoto, type Moto } from '../testing/moto.js';
 *
 * describe('s3', { skip: motoSkip() }, () => {
 *   let moto: Moto;
 *   before(async () => { moto = await startMoto({ buckets: ['holdfast-test'] }); });
 *   after(() => moto?.stop());
 *   it('works', async () => { … new S3Backend('s3://holdfast-test/x', moto.settings) … });
 * });
 * ```
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from './pg.js';
import { onExitCleanup } from './exit-cleanup.js';
import type { S3Settings } from '../storage/settings.js';

/** Access key moto accepts (any does); tests pass it through the standard AWS variables. */
export const MOTO_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'holdfast-test', AWS_SECRET_ACCESS_KEY: 'holdfast-test-secret' } as const;

export interface Moto {
  readonly port: number;
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  /** Settings for S3Backend: this endpoint, path-style, region us-east-1. */
  readonly settings: S3Settings;
  /** Create a bucket (PUT /bucket). */
  createBucket(name: string): Promise<void>;
  /** SIGSTOP the server: connections are accepted by the kernel but never answered (a hung store). */
  pause(): void;
  /** SIGCONT: it answers again, with its data intact. */
  resume(): void;
  stop(): Promise<void>;
}

export interface MotoOptions {
  readonly buckets?: readonly string[];
  /**
   * Smallest multipart part moto accepts (S3's rule is 5 MiB; moto's S3_UPLOAD_PART_MIN_SIZE).
   * Lower lets tests exercise multipart uploads with small objects.
   */
  readonly minPartSize?: number;
  /** Check access keys against moto's IAM (INITIAL_NO_AUTH_ACTION_COUNT=0): every key is then unknown. */
  readonly authenticate?: boolean;
}

/**
 * moto_server's main() with every request handled under one lock. moto's server is threaded and
 * checks `If-None-Match: *` and then writes in two steps, so two concurrent create-only writes can
 * both succeed; S3 decides them atomically. Serialising requests gives the tests S3's behaviour
 * (the contract's create-only races are then a test of the driver, not of moto's threads).
 */
const SERIALISED_MOTO = `
import sys, threading
import werkzeug.serving as serving
run_simple = serving.run_simple
lock = threading.Lock()
def serialised(host, port, app, **kw):
    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))
    return run_simple(host, port, one_at_a_time, **kw)
serving.run_simple = serialised
from moto.server import main
sys.argv = ['moto_server'] + sys.argv[1:]
main()
`;

let command: { cmd: string; args: string[] } | null | undefined;

/**
 * How to run moto_server here, or null when moto is not installed: the serialised main() with the
 * python3 that has moto, else the moto_server script on PATH (threaded: see SERIALISED_MOTO).
 */
function motoCommand(): { cmd: string; args: string[] } | null {
  if (command !== undefined) return command;
  const py = spawnSync('python3', ['-c', 'import moto.server'], { encoding: 'utf8', timeout: 30_000 });
  if (py.status === 0) return (command = { cmd: 'python3', args: ['-c', SERIALISED_MOTO] });
  const onPath = spawnSync('sh', ['-c', 'command -v moto_server'], { encoding: 'utf8', timeout: 10_000 });
  if (onPath.status === 0 && onPath.stdout.trim() !== '') return (command = { cmd: onPath.stdout.trim(), args: [] });
  return (command = null);
}

/** A reason to skip S3 tests (moto missing), or false. HOLDFAST_REQUIRE_S3=1 turns the skip into an error. */
export function motoSkip(): string | false {
  if (motoCommand()) return false;
  const reason = 'moto_server is not installed (neither on PATH nor importable by python3); scripts/s3-deps.sh installs it';
  if (process.env['HOLDFAST_REQUIRE_S3'] === '1') throw new Error(`HOLDFAST_REQUIRE_S3=1 but ${reason}`);
  return `S3 tests need moto: ${reason}`;
}

export async function startMoto(options: MotoOptions = {}): Promise<Moto> {
  const how = motoCommand();
  if (!how) throw new Error('moto_server is not installed');
  let lastError = '';
  // A free port can be taken by someone else before the server binds it: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    // moto logs every request on stderr: to a file, never a pipe, which would fill and block the
    // server while a test waits in spawnSync for a CLI that talks to it.
    const logFile = path.join(os.tmpdir(), `holdfast-moto-${process.pid}-${port}.log`);
    const logFd = fs.openSync(logFile, 'w');
    const child = spawn(how.cmd, [...how.args, '-H', '127.0.0.1', '-p', String(port)], {
      stdio: ['ignore', 'ignore', logFd],
      env: {
        ...process.env,
        ...(options.minPartSize !== undefined ? { S3_UPLOAD_PART_MIN_SIZE: String(options.minPartSize) } : {}),
        ...(options.authenticate ? { INITIAL_NO_AUTH_ACTION_COUNT: '0' } : {}),
      },
      detached: false,
    });
    fs.closeSync(logFd);
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      fs.rmSync(logFile, { force: true });
    };
    onExitCleanup(kill);
    const endpoint = `http://127.0.0.1:${port}`;
    if (await waitUntilUp(endpoint, child, 30_000)) {
      const moto = makeMoto(child, port, endpoint, logFile);
      for (const b of options.buckets ?? []) await moto.createBucket(b);
      return moto;
    }
    lastError = readTail(logFile);
    kill();
  }
  throw new Error(`moto_server did not start: ${lastError}`);
}

async function waitUntilUp(endpoint: string, child: ChildProcess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const r = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      return true; // any answer (with authentication on, an unsigned request gets an error)
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-5).join('\n');
  } catch {
    return '(no log)';
  }
}

function makeMoto(child: ChildProcess, port: number, endpoint: string, logFile: string): Moto {
  return {
    port,
    endpoint,
    settings: { endpoint, pathStyle: true, region: 'us-east-1' },
    async createBucket(name: string): Promise<void> {
      const r = await fetch(`${endpoint}/${name}`, { method: 'PUT', signal: AbortSignal.timeout(10_000) });
      const text = await r.text();
      if (r.status !== 200) throw new Error(`moto: creating bucket ${name} failed: HTTP ${r.status} ${text}`);
    },
    pause(): void {
      child.kill('SIGSTOP');
    },
    resume(): void {
      child.kill('SIGCONT');
    },
    async stop(): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGCONT');
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      fs.rmSync(logFile, { force: true });
    },
  };
}
