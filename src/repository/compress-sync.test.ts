import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MODE_ZSTD, compress, decompress, frameContentSize, useSyncCompression } from './compress.js';
import { Rng } from '../testing/helpers.js';

// Its own file: useSyncCompression() switches this test process to the native helper.
test('the synchronous native compressor writes standard zstd frames, honours the level, and round-trips', async (t) => {
  if (!useSyncCompression()) {
    t.skip('native/zstd-sync.c was not built on this machine (no C compiler, Node headers or libzstd.so.1)');
    return;
  }
  const rng = new Rng(81);
  for (const size of [100, 6000, 200_000, 3 << 20]) {
    const text = rng.text(size);
    const [mode, z] = await compress(text, { algo: 'zstd', level: 3 });
    assert.equal(mode, MODE_ZSTD, `${size} bytes of text compress`);
    assert.equal(z.readUInt32LE(0), 0xfd2fb528, 'a zstd frame (magic number)');
    assert.equal(frameContentSize(z), size, 'its header declares the size');
    assert.ok((await decompress(mode, z)).equals(text), `${size} bytes round-trip through the async binding`);
  }
  const text = rng.text(1 << 20);
  const [, fast] = await compress(text, { algo: 'zstd', level: -5 });
  const [, strong] = await compress(text, { algo: 'zstd', level: 19 });
  assert.ok(strong.length < fast.length * 0.9, `level 19 (${strong.length}) beats level -5 (${fast.length})`);
});
