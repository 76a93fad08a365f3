/**
 * startWriteback (compress.ts, native/zstd-sync.c): the hint restore workers give as they write
 * (docs/design.md §11). It must start writeback of a regular file's range and never throw.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { startWriteback } from './compress.js';
import { ROOT } from '../testing/helpers.js';

const built = fs.existsSync(path.join(ROOT, 'build', 'zstd-sync.node'));

test('startWriteback starts writing a regular file\'s dirty range, and is false (never an exception) where it cannot', { skip: built ? false : 'native/zstd-sync.c was not built on this machine' }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-writeback-'));
  const fd = fs.openSync(path.join(dir, 'f'), 'w');
  try {
    fs.writeSync(fd, Buffer.alloc(1 << 20, 7));
    assert.equal(startWriteback(fd, 0, 1 << 20), true);
    assert.equal(startWriteback(fd, 0, 0), true, 'length 0: up to the end of the file');
    assert.equal(startWriteback(fd, -1, 10), false);
    assert.equal(startWriteback(123_456, 0, 10), false, 'a descriptor that is not open');
    const [r, w] = pipe();
    try {
      assert.equal(startWriteback(w, 0, 10), false, 'a pipe');
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A pipe's two descriptors (a FIFO opened both ways). */
function pipe(): [number, number] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'holdfast-fifo-'));
  const fifo = path.join(dir, 'p');
  execFileSync('mkfifo', [fifo]);
  const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.rmSync(dir, { recursive: true, force: true });
  return [r, w];
}
