/**
 * The repository: keys, config, packs, index and snapshot files on top of one Backend.
 *
 * Layout (see docs/design.md for the full specification):
 *   config              sealed JSON, AAD "holdfast:config"
 *   keys/<id>           plaintext JSON key files (keys.ts)
 *   data/<xx>/<id>      packs (pack.ts)
 *   index/<id>          sealed binary index files (index-file.ts)
 *   snapshots/<id>      sealed JSON snapshot manifests
 *   catalog/<id>        their copies (the same bytes): the record of which snapshots exist
 *
 * Write ordering: a blob becomes visible in the in-memory index only after the pack holding it
 * is durable; an index file is written only after every pack it lists is durable; callers write
 * a snapshot only after `flush()` resolved. A crash at any point leaves at worst packs no index
 * lists (reported by check, removed by a later prune), never a reference to missing data.
 */
import { randomBytes } from 'node:crypto';
import { type Backend, type ObjectWriter, StorageError, isNotFound } from '../storage/backend.js';
import { HoldfastError } from '../errors/catalogue.js';
import { Semaphore } from '../util/semaphore.js';
import { DecryptError, KEY_LEN, type ScryptParams, Sealer, seal, sealParts, sha256, sha256Hex, unseal } from './crypto.js';
import { type SealedBlob, sealBlob } from './seal-blob.js';
import { openBlob } from './open-blob.js';
import { type Compression, MODE_NONE, MODE_ZSTD, compress, compressPieces, decompress } from './compress.js';
import { type KeyFile, KeyFormatError, createKeyFile, deriveKek, parseKeyFile, unwrapWithKek } from './keys.js';
import type { KeyCache } from '../state/key-cache.js';
import { type BlobType, PACK_MAGIC, PackBuilder, type PackEntry, PackFormatError, TRAILER_LEN, decodeHeader, headerLocation, packName } from './pack.js';
import { type IndexFileContent, type IndexPack, decodeIndex, encodeIndex } from './index-file.js';

export const REPO_VERSION = 1;

export interface ChunkerParams {
  /** base64 of 32 random bytes; the gear table is derived from it, so chunk boundaries are per-repository. */
  readonly seed: string;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

export interface RepoConfig {
  readonly version: number;
  readonly id: string;
  readonly created: string;
  readonly chunker: ChunkerParams;
}

export type FileKind = 'snapshot' | 'index' | 'config';

const FILE_DIRS: Record<Exclude<FileKind, 'config'>, string> = { snapshot: 'snapshots', index: 'index' };

/** Second copies of snapshot manifests, the repository's record of which snapshots exist (§8.2). */
export const CATALOG_DIR = 'catalog';

/** The object and its catalog copy for an intent entry: a snapshot id, or `key:<id>`. */
export function catalogNames(entry: string): { name: string; copy: string; id: string } {
  if (entry.startsWith('key:')) {
    const id = entry.slice(4);
    return { name: `keys/${id}`, copy: `${CATALOG_DIR}/keys/${id}`, id };
  }
  return { name: `snapshots/${entry}`, copy: `${CATALOG_DIR}/${entry}`, id: entry };
}

/** Packs per index file written by prune and repair. */
const PACKS_PER_INDEX = 4096;

export interface BlobLocation {
  readonly type: BlobType;
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  readonly rawLength: number;
}

export interface WriteOptions {
  readonly compression: Compression;
  readonly packSize: number;
}

/** Every index file read, and the ids some file supersedes (the master index is the rest). */
export interface IndexFiles {
  readonly files: Array<{ id: string; content: IndexFileContent }>;
  readonly superseded: Set<string>;
}

export interface InitOptions {
  readonly kdf: ScryptParams;
  readonly chunker: Omit<ChunkerParams, 'seed'>;
  /**
   * Given, the new key's KEK is cached as `open` would cache it: the first archive_command call
   * after `init` then skips scrypt too (~0.15 s at the default cost).
   */
  readonly keyCache?: KeyCache | undefined;
}

/**
 * Where the blobs of one type live, compactly: ids as 32-character binary strings in a Map, the
 * locations in growable typed arrays. About 100 bytes per blob instead of ~250 for an object per
 * blob, which is what keeps backups of large trees within their memory bound.
 */
class BlobTable {
  private readonly rows = new Map<string, number>();
  private pack: Uint32Array = new Uint32Array(1024);
  private offset: Uint32Array = new Uint32Array(1024);
  private length: Uint32Array = new Uint32Array(1024);
  private raw: Uint32Array = new Uint32Array(1024);

  get size(): number {
    return this.rows.size;
  }

  /** False when the id is already present (the first location wins). */
  add(key: string, pack: number, e: PackEntry): boolean {
    if (this.rows.has(key)) return false;
    const row = this.rows.size;
    if (row === this.pack.length) {
      const grow = (a: Uint32Array): Uint32Array => {
        const b = new Uint32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.pack = grow(this.pack);
      this.offset = grow(this.offset);
      this.length = grow(this.length);
      this.raw = grow(this.raw);
    }
    this.pack[row] = pack;
    this.offset[row] = e.offset;
    this.length[row] = e.length;
    this.raw[row] = e.rawLength;
    this.rows.set(key, row);
    return true;
  }

  row(key: string): number | undefined {
    return this.rows.get(key);
  }

  at(row: number): { pack: number; offset: number; length: number; rawLength: number } {
    return { pack: this.pack[row]!, offset: this.offset[row]!, length: this.length[row]!, rawLength: this.raw[row]! };
  }

  keys(): IterableIterator<[string, number]> {
    return this.rows.entries();
  }
}

/**
 * Every blob the repository knows, with where it lives. Blobs are identified by (type, id): a
 * data blob and a tree blob with the same bytes are distinct blobs.
 */
export class MasterIndex {
  private readonly tables: Record<BlobType, BlobTable> = { data: new BlobTable(), tree: new BlobTable() };
  private readonly packIds: string[] = [];
  private readonly packRow = new Map<string, number>();
  readonly packs = new Map<string, { size: number; count: number }>();
  /** Blobs listed in more than one pack (harmless after crashes; reported by check). */
  duplicates = 0;
  /** Blobs listed twice in the same pack at different positions (damage; at most 1000 kept). */
  readonly conflicts: Array<{ blob: string; pack: string }> = [];

  add(pack: IndexPack): void {
    let p = this.packRow.get(pack.id);
    if (p === undefined) {
      p = this.packIds.length;
      this.packIds.push(pack.id);
      this.packRow.set(pack.id, p);
      this.packs.set(pack.id, { size: pack.size, count: pack.entries.length });
    }
    for (const e of pack.entries) {
      const table = this.tables[e.type];
      const key = e.id.toString('latin1');
      if (!table.add(key, p, e)) {
        const at = table.at(table.row(key)!);
        if (at.pack !== p) this.duplicates++;
        else if ((at.offset !== e.offset || at.length !== e.length) && this.conflicts.length < 1000) this.conflicts.push({ blob: e.id.toString('hex'), pack: pack.id });
      }
    }
  }

  /** The blob's location; without `type`, a data blob is preferred over a tree blob. */
  get(id: string, type?: BlobType): BlobLocation | undefined {
    const key = Buffer.from(id, 'hex').toString('latin1');
    for (const t of type ? [type] : (['data', 'tree'] as const)) {
      const row = this.tables[t].row(key);
      if (row !== undefined) {
        const r = this.tables[t].at(row);
        return { type: t, pack: this.packIds[r.pack]!, offset: r.offset, length: r.length, rawLength: r.rawLength };
      }
    }
    return undefined;
  }

  has(id: string, type?: BlobType): boolean {
    const key = Buffer.from(id, 'hex').toString('latin1');
    return type ? this.tables[type].row(key) !== undefined : this.tables.data.row(key) !== undefined || this.tables.tree.row(key) !== undefined;
  }

  get blobCount(): number {
    return this.tables.data.size + this.tables.tree.size;
  }

  *entries(): IterableIterator<[string, BlobLocation]> {
    for (const type of ['data', 'tree'] as const) {
      const table = this.tables[type];
      for (const [key, row] of table.keys()) {
        const r = table.at(row);
        yield [Buffer.from(key, 'latin1').toString('hex'), { type, pack: this.packIds[r.pack]!, offset: r.offset, length: r.length, rawLength: r.rawLength }];
      }
    }
  }
}

interface OpenPack {
  readonly builder: PackBuilder;
  readonly writer: ObjectWriter;
  /** Writes queued for this pack, in order. */
  chain: Promise<void>;
  /** Bytes queued but not yet written. */
  pending: number;
  /** Parts waiting for the next write, and whether a write loop is running. */
  queue: Buffer[];
  draining: boolean;
}

/** A plaintext read piece by piece for putNamedPieces. */
export interface PieceReader {
  /** Fill `buf` from its start with the next bytes; fewer than `buf.length` only at the end. */
  fill(buf: Buffer): number;
  close(): void;
}

/** putNamedPieces reads, compresses and encrypts this many bytes at a time. */
const PIECE_SIZE = 1 << 20;

export interface NamedPutOptions {
  /** Fail (created: false) rather than replace an existing object. */
  readonly createOnly?: boolean;
  /** false: atomic and visible, but not made durable (see the storage contract). */
  readonly durable?: boolean;
}

export class Repository {
  readonly index = new MasterIndex();
  /** Index files loaded (ids), for check and prune. */
  readonly indexFiles: string[] = [];
  private readonly packers = new Map<BlobType, OpenPack>();
  private readonly pending = new Set<string>();
  private readonly uploads = new Set<Promise<void>>();
  /** Finished packs not yet durable (uploading or waiting); producers wait while it is at the limit. */
  private queuedPacks = 0;
  private readonly maxQueuedPacks = 6;
  private packWaiters: Array<() => void> = [];
  private readonly sealSem = new Semaphore(4);
  private unsavedPacks: IndexPack[] = [];
  private uploadError: unknown;
  private writeOptions: WriteOptions = { compression: { algo: 'zstd', level: 3 }, packSize: 16 << 20 };
  /** Bytes added to storage by this process (packs and files). */
  addedBytes = 0;
  /** Packs committed by this process. */
  addedPacks = 0;

  private constructor(
    readonly backend: Backend,
    private readonly masterKey: Buffer,
    readonly config: RepoConfig,
    readonly keyId: string,
  ) {}

  static async init(backend: Backend, password: string, options: InitOptions): Promise<Repository> {
    const existing = await backend.stat('config').then(
      () => true,
      (err: unknown) => {
        if (isNotFound(err)) return false;
        throw storageToHoldfast(err, backend);
      },
    );
    if (existing) throw new HoldfastError('REPO_EXISTS', `a repository already exists at ${backend.location}`, { location: backend.location });
    const master = randomBytes(KEY_LEN);
    const config: RepoConfig = {
      version: REPO_VERSION,
      id: randomBytes(16).toString('hex'),
      created: new Date().toISOString(),
      chunker: { seed: randomBytes(32).toString('base64'), ...options.chunker },
    };
    const key = await createKeyFile(master, password, options.kdf);
    const keyName = `keys/${key.id}`;
    await removeHalfKeyPairs(backend);
    try {
      // Key (and its copy) first, then config: a repository whose config exists always has a key that opens it.
      await backend.put(keyName, key.bytes, { createOnly: true });
      await backend.put(`${CATALOG_DIR}/${keyName}`, key.bytes);
    } catch (err) {
      throw storageToHoldfast(err, backend);
    }
    const repo = new Repository(backend, master, config, key.id);
    try {
      await backend.put('config', await repo.sealFile('config', Buffer.from(JSON.stringify(config))), { createOnly: true });
      options.keyCache?.put(key.id, password, key.kek);
      return repo;
    } catch (err) {
      // Lost the race for config (or failed writing it): our key wraps a master key nobody uses.
      await backend.delete(`${CATALOG_DIR}/${keyName}`).catch(() => undefined);
      await backend.delete(keyName).catch(() => undefined);
      if (err instanceof StorageError && err.kind === 'exists') throw new HoldfastError('REPO_EXISTS', `a repository already exists at ${backend.location}`, { location: backend.location });
      throw storageToHoldfast(err, backend);
    }
  }

  /**
   * Open with a password: the first key file it unwraps (and whose master key authenticates the
   * config) wins. `keyCache` lets short-lived processes skip scrypt (see state/key-cache.ts).
   */
  static async open(backend: Backend, password: string, options: { keyCache?: KeyCache | undefined } = {}): Promise<Repository> {
    let sealedConfig: Buffer;
    try {
      sealedConfig = await backend.get('config');
    } catch (err) {
      if (isNotFound(err)) throw new HoldfastError('REPO_NOT_FOUND', `no holdfast repository at ${backend.location}`, { location: backend.location });
      throw storageToHoldfast(err, backend);
    }
    const list = async (prefix: string): Promise<string[]> => {
      const out: string[] = [];
      try {
        for await (const k of backend.list(prefix)) out.push(k.name);
      } catch (err) {
        throw storageToHoldfast(err, backend);
      }
      return out.sort();
    };
    const keyNames = await list('keys/');
    let unreadable = 0;
    let configFailure: HoldfastError | undefined;
    const idOf = (name: string): string => name.slice(name.lastIndexOf('/') + 1);
    const unreadableIds = new Set<string>();
    const tryKey = async (name: string): Promise<Repository | undefined> => {
      let file: KeyFile;
      try {
        const bytes = await backend.get(name);
        if (sha256Hex(bytes) !== idOf(name)) throw new KeyFormatError('does not match its name');
        file = parseKeyFile(bytes);
      } catch (err) {
        if (err instanceof KeyFormatError || isNotFound(err)) {
          unreadable++;
          unreadableIds.add(idOf(name));
          return undefined;
        }
        throw storageToHoldfast(err, backend);
      }
      const keyId = idOf(name);
      let master: Buffer | undefined;
      const cached = options.keyCache?.get(keyId, password);
      if (cached) {
        master = unwrapWithKek(file, cached);
        if (!master) options.keyCache?.drop(keyId, password);
      }
      if (!master) {
        const kek = await deriveKek(file, password);
        master = unwrapWithKek(file, kek);
        if (master) options.keyCache?.put(keyId, password, kek);
      }
      if (!master) return undefined;
      let config: RepoConfig;
      try {
        config = await parseConfig(master, sealedConfig, backend.location);
      } catch (err) {
        // A key for another master key (left by an interrupted or racing init) opens with this
        // password but not the config: try the next key, and report the config only if none fits.
        if (err instanceof HoldfastError && err.code === 'INTEGRITY' && err.data['authFailed'] === true) {
          configFailure ??= err;
          return undefined;
        }
        throw err;
      }
      return new Repository(backend, master, config, keyId);
    };
    for (const name of keyNames) {
      const repo = await tryKey(name);
      if (repo) return repo;
    }
    // A lost or damaged key file: its copy in the catalog (§8.2) opens the repository; check reports the damage.
    const copies = (await list(`${CATALOG_DIR}/keys/`)).filter((n) => !keyNames.includes(`keys/${idOf(n)}`) || unreadableIds.has(idOf(n)));
    for (const name of copies) {
      const repo = await tryKey(name);
      if (repo) return repo;
    }
    if (keyNames.length === 0 && copies.length === 0) throw new HoldfastError('INTEGRITY', `repository at ${backend.location} has a config but no key files`, { location: backend.location, object: 'keys/' });
    if (configFailure) throw configFailure;
    throw new HoldfastError('WRONG_PASSWORD', `wrong password: none of the ${keyNames.length} key(s) of ${backend.location} opens with it${unreadable ? ` (${unreadable} key file(s) unreadable)` : ''}`, {
      location: backend.location,
      keys: keyNames.length,
    });
  }

  setWriteOptions(options: WriteOptions): void {
    this.writeOptions = options;
  }
  /** How named objects and blobs are compressed now (setWriteOptions; zstd:3 by default). */
  get compression(): Compression {
    return this.writeOptions.compression;
  }


  private commitGuard: (() => Promise<void>) | undefined;

  /**
   * Called before every commit: index and snapshot files, deletions, named objects other than
   * locks, key removal. A lock holder installs its `verify` here, so nothing is committed by a
   * holder that lost its lock (docs/design.md §15).
   */
  setCommitGuard(guard: (() => Promise<void>) | undefined): void {
    this.commitGuard = guard;
  }

  private async guard(): Promise<void> {
    if (this.commitGuard) await this.commitGuard();
  }

  // ---------------------------------------------------------------- sealed files

  async sealFile(kind: FileKind, plain: Buffer): Promise<Buffer> {
    const [mode, payload] = await compress(plain, this.writeOptions.compression);
    return seal(this.masterKey, fileAad(kind), [Buffer.of(mode), payload]);
  }

  async unsealFile(kind: FileKind, name: string, sealed: Buffer): Promise<Buffer> {
    return this.openSealed(fileAad(kind), name, sealed);
  }

  /** Authenticate, decrypt and decompress one sealed object; INTEGRITY naming it on failure. */
  private async openSealed(aad: Buffer, name: string, sealed: Buffer): Promise<Buffer> {
    let plain: Buffer;
    try {
      plain = unseal(this.masterKey, aad, sealed);
    } catch (err) {
      if (err instanceof DecryptError) throw new HoldfastError('INTEGRITY', `${name}: ${err.message}`, { object: name });
      throw err;
    }
    try {
      return await decompress(plain[0]!, plain.subarray(1));
    } catch (err) {
      throw new HoldfastError('INTEGRITY', `${name}: cannot decompress: ${(err as Error).message}`, { object: name }, { cause: err });
    }
  }

  /**
   * Store a sealed file under `<dir>/<sha256 of stored bytes>`; returns the id. A snapshot is
   * committed in two objects, announced first (docs/design.md §8.2): `snapshots/<id>`, then its
   * copy `catalog/<id>` (the same bytes).
   */
  async saveFile(kind: Exclude<FileKind, 'config'>, plain: Buffer): Promise<string> {
    const sealed = await this.sealFile(kind, plain);
    const id = sha256Hex(sealed);
    await this.guard();
    if (kind === 'snapshot') await this.announce([id], []);
    try {
      await this.backend.put(`${FILE_DIRS[kind]}/${id}`, sealed);
      if (kind === 'snapshot') await this.backend.put(`${CATALOG_DIR}/${id}`, sealed);
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    this.addedBytes += sealed.length * (kind === 'snapshot' ? 2 : 1);
    return id;
  }

  private intentLog: ((add: readonly string[], remove: readonly string[]) => Promise<void>) | undefined;

  /** Where a lock holder records what it commits (its lock's `announce`); see setCommitGuard. */
  setIntentLog(log: ((add: readonly string[], remove: readonly string[]) => Promise<void>) | undefined): void {
    this.intentLog = log;
  }

  /** Announce snapshots about to be added or removed (several removals: once, before the first). */
  async announce(add: readonly string[], remove: readonly string[]): Promise<void> {
    if (this.intentLog) await this.intentLog(add, remove);
  }

  /**
   * Finish the commit a stale lock announced: a snapshot (or key file, `key:<id>`) it added gets
   * its missing copy (the object is whole: it was written first and is checked against its name);
   * one it removed is removed entirely. Needs no key: copies are the same bytes. Idempotent.
   */
  async finishIntent(intent: { readonly add: readonly string[]; readonly remove: readonly string[] }): Promise<void> {
    try {
      for (const entry of intent.add) {
        const { name, copy, id } = catalogNames(entry);
        let bytes: Buffer;
        try {
          bytes = await this.backend.get(name);
        } catch (err) {
          if (isNotFound(err)) continue;
          throw err;
        }
        if (sha256Hex(bytes) !== id) continue; // damaged: check reports it; repair decides
        await this.backend.put(copy, bytes);
      }
      for (const entry of intent.remove) {
        const { name, copy } = catalogNames(entry);
        await this.backend.delete(copy);
        await this.backend.delete(name);
      }
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
  }

  /** Ids of the snapshot manifests (`snapshots/`), without their copies. */
  async listSnapshotManifests(): Promise<string[]> {
    return this.listIds(`${FILE_DIRS.snapshot}/`);
  }

  /** The plaintext of `snapshots/<id>` only (no fallback to the copy): check. */
  async loadSnapshotManifest(id: string): Promise<Buffer> {
    return this.loadVerified('snapshot', `${FILE_DIRS.snapshot}/${id}`, id);
  }

  /** Ids of the snapshot manifest copies (`catalog/`). */
  async listSnapshotCopies(): Promise<string[]> {
    return this.listIds(`${CATALOG_DIR}/`);
  }

  /** The plaintext of `catalog/<id>`, verified against the id (check, repair). */
  async loadSnapshotCopy(id: string): Promise<Buffer> {
    return this.loadVerified('snapshot', `${CATALOG_DIR}/${id}`, id);
  }

  /** The stored bytes of `snapshots/<id>` (primary) or `catalog/<id>` (copy), verified and authenticated (repair). */
  async readSnapshotObject(which: 'primary' | 'copy', id: string): Promise<Buffer> {
    const names = catalogNames(id);
    const name = which === 'copy' ? names.copy : names.name;
    const sealed = await this.getVerified(name, id);
    await this.unsealFile('snapshot', name, sealed);
    return sealed;
  }

  /** Write `catalog/<id>` or `snapshots/<id>` from the other one's bytes (repair). */
  async restoreSnapshotObject(which: 'primary' | 'copy', id: string, sealed: Buffer): Promise<void> {
    if (sha256Hex(sealed) !== id) throw new HoldfastError('INTERNAL', `refusing to store bytes that do not match snapshot ${id}`);
    await this.guard();
    try {
      const names = catalogNames(id);
      await this.backend.put(which === 'copy' ? names.copy : names.name, sealed);
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
  }

  /**
   * The plaintext of `<dir>/<id>`. A snapshot whose manifest is missing or damaged is read from
   * its copy `catalog/<id>` (check reports the damage; `repair snapshots` rewrites it).
   */
  async loadFile(kind: Exclude<FileKind, 'config'>, id: string): Promise<Buffer> {
    const name = `${FILE_DIRS[kind]}/${id}`;
    try {
      return await this.loadVerified(kind, name, id);
    } catch (err) {
      if (kind !== 'snapshot' || !(err instanceof HoldfastError) || (err.code !== 'INTEGRITY' && err.code !== 'OBJECT_MISSING')) throw err;
      try {
        return await this.loadVerified(kind, `${CATALOG_DIR}/${id}`, id);
      } catch {
        throw err;
      }
    }
  }

  private async loadVerified(kind: Exclude<FileKind, 'config'>, name: string, id: string): Promise<Buffer> {
    return this.unsealFile(kind, name, await this.getVerified(name, id));
  }

  /** The stored bytes of `name`, which must hash to `id` (INTEGRITY otherwise). */
  private async getVerified(name: string, id: string): Promise<Buffer> {
    let bytes: Buffer;
    try {
      bytes = await this.backend.get(name);
    } catch (err) {
      throw storageToHoldfast(err, this.backend, name);
    }
    if (sha256Hex(bytes) !== id) throw new HoldfastError('INTEGRITY', `${name}: content does not match its name (SHA-256 mismatch)`, { object: name });
    return bytes;
  }

  /** Ids of the files of one kind; for snapshots, those with a manifest or a copy (or both). */
  async listFiles(kind: Exclude<FileKind, 'config'>): Promise<string[]> {
    const ids = await this.listIds(`${FILE_DIRS[kind]}/`);
    if (kind !== 'snapshot') return ids;
    return [...new Set([...ids, ...(await this.listSnapshotCopies())])].sort();
  }

  private async listIds(dir: string): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const o of this.backend.list(dir)) {
        const id = o.name.slice(dir.length);
        if (/^[0-9a-f]{64}$/.test(id)) out.push(id);
      }
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    return out.sort();
  }

  /** Remove a file; a snapshot is announced, then its copy removed, then its manifest. */
  async deleteFile(kind: Exclude<FileKind, 'config'>, id: string): Promise<void> {
    await this.guard();
    if (kind === 'snapshot') await this.announce([], [id]);
    try {
      if (kind === 'snapshot') await this.backend.delete(`${CATALOG_DIR}/${id}`);
      await this.backend.delete(`${FILE_DIRS[kind]}/${id}`);
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
  }

  /** Every pack in storage (`data/`), by id, with its size: check, prune, repair. */
  async listPacks(): Promise<Map<string, number>> {
    const stored = new Map<string, number>();
    try {
      for await (const o of this.backend.list('data/')) {
        const id = o.name.split('/').pop()!;
        if (/^[0-9a-f]{64}$/.test(id)) stored.set(id, o.size);
      }
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    return stored;
  }

  /** Remove a pack (prune); a missing one is not an error. */
  async deletePack(id: string): Promise<void> {
    await this.guard();
    try {
      await this.backend.delete(packName(id));
    } catch (err) {
      throw storageToHoldfast(err, this.backend, packName(id));
    }
  }

  // ---------------------------------------------------------------- named objects

  /**
   * Objects stored under a name chosen by the caller rather than their hash (WAL files, cluster
   * records): sealed like every object, with the name in the AAD, so content cannot be moved to
   * another name undetected. `createOnly` makes the put fail with REPO_EXISTS-free semantics:
   * returns false when the name exists. Returns the bytes stored.
   */
  async putNamed(name: string, plain: Buffer, options: NamedPutOptions = {}): Promise<{ created: boolean; size: number }> {
    const [mode, payload] = await compress(plain, this.writeOptions.compression);
    return this.putSealed(name, sealParts(this.masterKey, namedAad(name), [Buffer.of(mode), payload]), options);
  }

  /**
   * `putNamed` of a plaintext read piece by piece (a WAL segment, 1 MiB at a time), never held
   * whole: each piece is compressed as its own zstd frame, several at once (compressPieces), and
   * encrypted as soon as its frame is ready. The object is the same as putNamed's (mode byte and
   * payload under one seal). `open` gives a reader of the plaintext from its start; it is opened
   * again, and the plaintext stored as is, when the frames are not smaller than the plaintext.
   */
  async putNamedPieces(name: string, open: () => PieceReader, options: NamedPutOptions = {}): Promise<{ created: boolean; size: number }> {
    const c = this.writeOptions.compression;
    if (c.algo === 'zstd') {
      const s = new Sealer(this.masterKey, namedAad(name));
      s.update(Buffer.of(MODE_ZSTD));
      let raw = 0;
      let packed = 0;
      const reader = open();
      try {
        for await (const [n, frame] of compressPieces((buf) => reader.fill(buf), c.level, PIECE_SIZE)) {
          raw += n;
          packed += frame.length;
          s.update(frame);
        }
      } finally {
        reader.close();
      }
      if (packed < raw && raw >= 64) return this.putSealed(name, s.finish(), options);
    }
    const s = new Sealer(this.masterKey, namedAad(name));
    s.update(Buffer.of(MODE_NONE));
    const reader = open();
    try {
      const buf = Buffer.allocUnsafe(PIECE_SIZE); // reused: the cipher's output is a copy
      for (let n = PIECE_SIZE; n === PIECE_SIZE; ) {
        n = reader.fill(buf);
        s.update(buf.subarray(0, n));
      }
    } finally {
      reader.close();
    }
    return this.putSealed(name, s.finish(), options);
  }

  private async putSealed(name: string, sealed: { parts: Buffer[]; length: number }, options: NamedPutOptions): Promise<{ created: boolean; size: number }> {
    if (!name.startsWith('locks/')) await this.guard();
    try {
      await this.backend.put(name, sealed.parts, { ...(options.createOnly ? { createOnly: true } : {}), ...(options.durable === false ? { durable: false } : {}) });
    } catch (err) {
      if (err instanceof StorageError && err.kind === 'exists') return { created: false, size: 0 };
      throw storageToHoldfast(err, this.backend, name);
    }
    this.addedBytes += sealed.length;
    return { created: true, size: sealed.length };
  }

  /** The plaintext of a named object, or undefined when it does not exist. */
  async getNamed(name: string): Promise<Buffer | undefined> {
    let sealed: Buffer;
    try {
      sealed = await this.backend.get(name);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw storageToHoldfast(err, this.backend, name);
    }
    return this.openSealed(namedAad(name), name, sealed);
  }

  /** Whether a named object exists (not read or verified). */
  async hasNamed(name: string): Promise<boolean> {
    try {
      await this.backend.stat(name);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw storageToHoldfast(err, this.backend, name);
    }
  }

  /** Remove a named object (a missing one is not an error). */
  async deleteNamed(name: string, options: { durable?: boolean } = {}): Promise<void> {
    if (!name.startsWith('locks/')) await this.guard();
    try {
      await this.backend.delete(name, options.durable === false ? { durable: false } : {});
    } catch (err) {
      throw storageToHoldfast(err, this.backend, name);
    }
  }

  /** Names below a directory prefix (e.g. `wal/main/`), without the prefix. */
  async listNamed(prefix: string): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const o of this.backend.list(prefix)) out.push(o.name.slice(prefix.length));
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    return out.sort();
  }

  // ---------------------------------------------------------------- index

  /** Whether `loadIndex` has run. */
  indexLoaded = false;

  /**
   * Load every index file that no other index file supersedes into the master index. By default
   * the first unreadable one is an error; with `onError` each failure is reported and loading
   * goes on (check, repair).
   */
  async loadIndex(onError?: (id: string, err: HoldfastError) => void): Promise<void> {
    const { files, superseded } = await this.readIndexFiles(onError);
    for (const { id, content } of files) {
      if (superseded.has(id)) continue;
      this.indexFiles.push(id);
      for (const p of content.packs) this.index.add(p);
    }
    this.indexLoaded = true;
  }

  /**
   * Read and decode every index file, with the set of ids some file supersedes. A prune deletes
   * superseded index files once nobody can still be reading them (§18), so a file that vanishes
   * between the listing and the read is only a problem when nothing supersedes it: the listing is
   * then taken again (a few times) before the absence counts as damage.
   */
  async readIndexFiles(onError?: (id: string, err: HoldfastError) => void): Promise<IndexFiles> {
    for (let attempt = 1; ; attempt++) {
      const ids = await this.listFiles('index');
      const superseded = new Set<string>();
      const files: Array<{ id: string; content: IndexFileContent }> = [];
      const vanished: Array<{ id: string; err: HoldfastError }> = [];
      for (const id of ids) {
        try {
          const buf = await this.loadFile('index', id);
          let content: IndexFileContent;
          try {
            content = decodeIndex(buf);
          } catch (err) {
            if (err instanceof PackFormatError) throw new HoldfastError('INTEGRITY', `index/${id}: ${err.message}`, { object: `index/${id}` });
            throw err;
          }
          for (const x of content.supersedes) superseded.add(x);
          files.push({ id, content });
        } catch (err) {
          if (err instanceof HoldfastError && err.code === 'OBJECT_MISSING') {
            vanished.push({ id, err });
            continue;
          }
          if (!onError || !(err instanceof HoldfastError) || err.code !== 'INTEGRITY') throw err;
          onError(id, err);
        }
      }
      const missing = vanished.filter((v) => !superseded.has(v.id));
      if (missing.length > 0 && attempt < 3) continue;
      for (const { id, err } of missing) {
        if (!onError) throw err;
        onError(id, err);
      }
      return { files, superseded };
    }
  }

  /** A pack's entries, from its own header (two range reads); `size` is the stored size. */
  async readPackHeader(id: string, size: number): Promise<PackEntry[]> {
    const name = packName(id);
    if (size < PACK_MAGIC.length + TRAILER_LEN) throw new HoldfastError('INTEGRITY', `${name}: only ${size} bytes, too short for a pack`, { object: name });
    try {
      const trailer = await this.backend.get(name, { offset: size - TRAILER_LEN, length: TRAILER_LEN });
      const loc = headerLocation(size, trailer);
      return decodeHeader(this.masterKey, await this.backend.get(name, loc), loc.offset);
    } catch (err) {
      if (err instanceof PackFormatError || err instanceof DecryptError) throw new HoldfastError('INTEGRITY', `${name}: ${err.message}`, { object: name });
      throw storageToHoldfast(err, this.backend, name);
    }
  }

  // ---------------------------------------------------------------- blobs

  /** True when the blob is stored or being stored by this process. */
  knows(type: BlobType, id: string): boolean {
    return this.index.has(id, type) || this.pending.has(`${type}:${id}`);
  }

  /**
   * Store a blob unless it is already known. `data` must not change until the returned promise
   * resolves (callers pass views into read buffers). Resolves once the blob is queued in a pack (not yet
   * durable: `flush()` makes it so). Applies backpressure while packs upload.
   */
  async saveBlob(type: BlobType, data: Buffer, id: Buffer = sha256(data)): Promise<{ id: Buffer; added: boolean }> {
    const hex = id.toString('hex');
    if (!this.claimBlob(type, hex)) return { id, added: false };
    let sealed: SealedBlob;
    await this.sealSem.acquire();
    try {
      sealed = await sealBlob(this.masterKey, type, id, data, this.writeOptions.compression);
    } catch (err) {
      this.releaseBlob(type, hex);
      throw err;
    } finally {
      this.sealSem.release();
    }
    await this.addSealedBlob(type, id, sealed, data.length);
    return { id, added: true };
  }

  /**
   * Reserve (type, id) for storing by this process. False when the blob is already stored or
   * claimed; true obliges the caller to `addSealedBlob` it, or `releaseBlob` if it cannot.
   */
  claimBlob(type: BlobType, hex: string): boolean {
    if (this.knows(type, hex)) return false;
    this.pending.add(`${type}:${hex}`);
    return true;
  }

  releaseBlob(type: BlobType, hex: string): void {
    this.pending.delete(`${type}:${hex}`);
  }

  /** What sealing a blob for this repository needs (backup worker threads seal blobs themselves). */
  sealingParams(): { key: Buffer; compression: Compression } {
    return { key: this.masterKey, compression: this.writeOptions.compression };
  }

  /**
   * Append a claimed blob, already sealed with `sealBlob`, to the open pack of its type. Resolves
   * once it is queued (not yet durable: `flush()` makes it so); applies backpressure while packs
   * are written.
   */
  async addSealedBlob(type: BlobType, id: Buffer, sealed: SealedBlob, rawLength: number): Promise<void> {
    while (this.queuedPacks >= this.maxQueuedPacks) await new Promise<void>((resolve) => this.packWaiters.push(resolve));
    if (this.uploadError) {
      this.releaseBlob(type, id.toString('hex'));
      throw this.uploadError;
    }
    let pack = this.packers.get(type);
    if (!pack) {
      pack = await this.startPack();
      if (this.packers.has(type)) {
        // Another caller opened one while we waited for the writer; use theirs.
        void pack.writer.abort();
        pack = this.packers.get(type)!;
      } else this.packers.set(type, pack);
    }
    const parts = pack.builder.add(type, id, sealed, rawLength);
    this.append(pack, parts, sealed.length);
    if (pack.pending > 8 << 20) await pack.chain;
    if (pack.builder.byteSize >= this.writeOptions.packSize && this.packers.get(type) === pack) {
      this.packers.delete(type);
      await this.finishPack(pack);
    }
  }

  private async startPack(): Promise<OpenPack> {
    let writer: ObjectWriter;
    try {
      writer = await this.backend.openWriter();
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    const pack: OpenPack = { builder: new PackBuilder(), writer, chain: Promise.resolve(), pending: 0, queue: [], draining: false };
    this.append(pack, pack.builder.head(), 0);
    return pack;
  }

  /**
   * Queue bytes for the pack's writer, in order. Parts queued while a write is under way go out
   * together in the next write (one writev for many small blobs). The first failure is kept in
   * uploadError.
   */
  private append(pack: OpenPack, parts: Buffer[], length: number, force = false): void {
    pack.pending += length;
    pack.queue.push(...parts);
    // Small blobs wait until 1 MiB is queued: one write per MiB instead of one per blob.
    if (pack.draining || (pack.pending < 1 << 20 && !force)) return;
    pack.draining = true;
    pack.chain = pack.chain.then(async () => {
      try {
        while (pack.queue.length > 0) {
          const batch = pack.queue.splice(0, 1024); // IOV_MAX
          let bytes = 0;
          for (const b of batch) bytes += b.length;
          try {
            await pack.writer.write(batch);
          } finally {
            pack.pending -= bytes;
          }
        }
      } catch (err) {
        this.uploadError ??= storageToHoldfast(err, this.backend);
        throw err;
      } finally {
        pack.draining = false;
      }
    });
    pack.chain.catch(() => undefined); // observed through uploadError and finishPack
  }

  /**
   * Finish a pack: append header and trailer, commit it durably under its hash, then (and only
   * then) make its blobs visible in the index. Runs in the background; at most
   * `maxQueuedPacks` run at once, and producers wait while that many are pending.
   */
  private async finishPack(pack: OpenPack): Promise<void> {
    if (this.uploadError) throw this.uploadError;
    this.queuedPacks++;
    const task = (async () => {
      try {
        this.append(pack, [], 0, true);
        await pack.chain;
        const { id, tail, size, entries } = pack.builder.finish(this.masterKey);
        await pack.writer.write(tail);
        await pack.writer.commit(packName(id));
        this.addedBytes += size;
        this.addedPacks++;
        const done: IndexPack = { id, size, entries };
        this.index.add(done);
        for (const e of entries) this.pending.delete(`${e.type}:${e.id.toString('hex')}`);
        this.unsavedPacks.push(done);
      } catch (err) {
        this.uploadError ??= storageToHoldfast(err, this.backend);
        await pack.writer.abort().catch(() => undefined);
      } finally {
        this.queuedPacks--;
        const waiters = this.packWaiters;
        this.packWaiters = [];
        for (const w of waiters) w();
      }
    })();
    this.uploads.add(task);
    void task.finally(() => this.uploads.delete(task));
    if (this.unsavedPacks.length >= 256) await this.saveIndex();
  }

  /** Make every blob saved so far durable: finish open packs, then write an index file for them. */
  async flush(): Promise<void> {
    for (const [type, pack] of [...this.packers]) {
      this.packers.delete(type);
      if (pack.builder.count > 0) await this.finishPack(pack);
      else await pack.writer.abort();
    }
    while (this.uploads.size > 0) await Promise.all([...this.uploads]);
    if (this.uploadError) throw this.uploadError;
    await this.saveIndex();
  }

  /**
   * Give up writing (an interrupted or failed backup): discard open packs, let packs already
   * being committed finish, and index those that became durable, so their blobs are reused by the
   * next backup instead of uploaded again. Writes no snapshot; never throws.
   */
  async abandon(): Promise<void> {
    for (const [type, pack] of [...this.packers]) {
      this.packers.delete(type);
      await pack.chain.catch(() => undefined);
      await pack.writer.abort().catch(() => undefined);
    }
    while (this.uploads.size > 0) await Promise.all([...this.uploads]);
    await this.saveIndex().catch(() => undefined);
  }

  /**
   * Write an index listing exactly `packs`, in files of PACKS_PER_INDEX packs; the last file
   * supersedes `supersedes`, which is the atomic switch (prune, repair): before it, the old files
   * still list everything.
   */
  async saveIndexFiles(packs: readonly IndexPack[], supersedes: readonly string[]): Promise<void> {
    const chunks: IndexPack[][] = [];
    for (let i = 0; i < packs.length; i += PACKS_PER_INDEX) chunks.push(packs.slice(i, i + PACKS_PER_INDEX));
    if (chunks.length === 0) chunks.push([]);
    for (const [i, list] of chunks.entries()) {
      await this.saveFile('index', encodeIndex({ supersedes: i === chunks.length - 1 ? [...supersedes] : [], packs: list }));
    }
  }

  private async saveIndex(): Promise<void> {
    if (this.unsavedPacks.length === 0) return;
    const packs = this.unsavedPacks;
    this.unsavedPacks = [];
    const id = await this.saveFile('index', encodeIndex({ supersedes: [], packs }));
    this.indexFiles.push(id);
  }

  async loadBlob(type: BlobType, id: string): Promise<Buffer> {
    const loc = this.index.get(id, type);
    if (!loc) throw new HoldfastError('OBJECT_MISSING', `${type} blob ${id} is not in the index`, { blob: id });
    return this.loadBlobAt(type, id, loc);
  }

  /** Read, decrypt and verify a blob at a known location (prune walks with its own index). */
  async loadBlobAt(type: BlobType, id: string, loc: Pick<BlobLocation, 'pack' | 'offset' | 'length' | 'rawLength'>): Promise<Buffer> {
    const name = packName(loc.pack);
    let sealed: Buffer;
    try {
      sealed = await this.backend.get(name, { offset: loc.offset, length: loc.length });
    } catch (err) {
      throw storageToHoldfast(err, this.backend, name, { blob: id });
    }
    return this.openBlob(type, Buffer.from(id, 'hex'), sealed, loc.rawLength, name);
  }

  /** Decrypt, decompress and verify one sealed blob (open-blob.ts); `sealed` is not modified. */
  openBlob(type: BlobType, id: Buffer, sealed: Buffer, rawLength: number, where: string): Promise<Buffer> {
    return openBlob(this.masterKey, type, id, sealed, rawLength, where);
  }

  /** For check --read-data and repair: the master key never leaves the repository layer otherwise. */
  packKey(): Buffer {
    return this.masterKey;
  }

  // ---------------------------------------------------------------- keys

  async listKeys(): Promise<Array<{ id: string; file: KeyFile | undefined; current: boolean }>> {
    const out = [];
    try {
      for await (const o of this.backend.list('keys/')) {
        const id = o.name.slice('keys/'.length);
        let file: KeyFile | undefined;
        try {
          file = parseKeyFile(await this.backend.get(o.name));
        } catch (err) {
          if (!(err instanceof KeyFormatError)) throw err;
        }
        out.push({ id, file, current: id === this.keyId });
      }
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    return out.sort((a, b) => (a.file?.created ?? '').localeCompare(b.file?.created ?? ''));
  }

  /**
   * Every key file and its catalog copy, with what is wrong with each if anything (check):
   * `undefined` when whole, 'missing', or what is wrong.
   */
  async listKeyFiles(): Promise<Array<{ id: string; primary: string | undefined; copy: string | undefined }>> {
    const ids = new Set<string>();
    const names = new Set<string>();
    try {
      for (const prefix of ['keys/', `${CATALOG_DIR}/keys/`]) {
        for await (const o of this.backend.list(prefix)) {
          names.add(o.name);
          ids.add(o.name.slice(prefix.length));
        }
      }
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    const judge = async (name: string, id: string): Promise<string | undefined> => {
      if (!names.has(name)) return 'missing';
      let bytes: Buffer;
      try {
        bytes = await this.backend.get(name);
      } catch (err) {
        if (isNotFound(err)) return 'missing';
        throw storageToHoldfast(err, this.backend, name);
      }
      if (sha256Hex(bytes) !== id) return 'does not match its name (SHA-256 mismatch): it is damaged';
      try {
        parseKeyFile(bytes);
      } catch (err) {
        return `cannot be parsed: ${(err as Error).message}`;
      }
      return undefined;
    };
    const out = [];
    for (const id of [...ids].sort()) out.push({ id, primary: await judge(`keys/${id}`, id), copy: await judge(`${CATALOG_DIR}/keys/${id}`, id) });
    return out;
  }

  /** Rewrite a key file (`primary`) or its copy from the other one, verified first (repair). */
  async restoreKeyObject(which: 'primary' | 'copy', id: string): Promise<void> {
    const names = catalogNames(`key:${id}`);
    const [from, to] = which === 'copy' ? [names.name, names.copy] : [names.copy, names.name];
    const bytes = await this.getVerified(from, id);
    parseKeyFile(bytes);
    await this.guard();
    try {
      await this.backend.put(to, bytes);
    } catch (err) {
      throw storageToHoldfast(err, this.backend, to);
    }
  }

  /** Add a key file for `password`, and its copy (announced first, as snapshots are: §8.2). */
  async addKey(password: string, kdf: ScryptParams): Promise<string> {
    const key = await createKeyFile(this.masterKey, password, kdf);
    await this.guard();
    await this.announce([`key:${key.id}`], []);
    try {
      await this.backend.put(`keys/${key.id}`, key.bytes, { createOnly: true });
      await this.backend.put(`${CATALOG_DIR}/keys/${key.id}`, key.bytes);
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
    return key.id;
  }

  async removeKey(id: string): Promise<void> {
    if (id === this.keyId) throw new HoldfastError('KEY_IN_USE', `key ${id.slice(0, 8)} is the key this command opened the repository with`, { key: id });
    const keys = await this.listKeys();
    if (!keys.some((k) => k.id === id)) throw new HoldfastError('OBJECT_MISSING', `no key ${id} in ${this.backend.location}`, { key: id, hint: 'Run `holdfast key list` to see key ids.' });
    await this.guard();
    await this.announce([], [`key:${id}`]);
    try {
      await this.backend.delete(`${CATALOG_DIR}/keys/${id}`);
      await this.backend.delete(`keys/${id}`);
    } catch (err) {
      throw storageToHoldfast(err, this.backend);
    }
  }

  async close(): Promise<void> {
    await this.backend.close();
  }
}

function namedAad(name: string): Buffer {
  return Buffer.from(`holdfast:named:${name}`, 'utf8');
}

function fileAad(kind: FileKind): Buffer {
  return Buffer.from(`holdfast:${kind}`, 'latin1');
}

/** A config is a few hundred bytes of JSON; it may not decompress to more than this. */
const MAX_CONFIG = 1 << 20;
/** The largest chunk size the option table allows (--chunk-max): bounds each worker's read window. */
const MAX_CHUNK = 64 << 20;

async function parseConfig(master: Buffer, sealed: Buffer, location: string): Promise<RepoConfig> {
  let plain: Buffer;
  try {
    plain = unseal(master, fileAad('config'), sealed);
  } catch {
    throw new HoldfastError('INTEGRITY', `config of ${location} fails authentication: it is corrupt or was replaced`, { object: 'config', location, authFailed: true });
  }
  let cfg: unknown;
  try {
    cfg = JSON.parse((await decompress(plain[0], plain.subarray(1), undefined, MAX_CONFIG)).toString('utf8'));
  } catch (err) {
    throw new HoldfastError('INTEGRITY', `config of ${location} is unreadable: ${(err as Error).message}`, { object: 'config', location });
  }
  return validateConfig(cfg, location);
}

/**
 * Check every field of a decoded config that holdfast uses (unknown fields are ignored, §4), so
 * a damaged or forged config is INTEGRITY (or FORMAT_UNSUPPORTED for a newer version) rather
 * than a TypeError later or a chunker allocating a window of any size.
 */
export function validateConfig(cfg: unknown, location: string): RepoConfig {
  const bad = (what: string): never => {
    throw new HoldfastError('INTEGRITY', `config of ${location} ${what}`, { object: 'config', location });
  };
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) return bad('is not a JSON object');
  const c = cfg as Partial<Record<keyof RepoConfig, unknown>>;
  if (typeof c.version === 'number' && Number.isInteger(c.version) && c.version > REPO_VERSION) {
    throw new HoldfastError('FORMAT_UNSUPPORTED', `repository format version ${c.version} is newer than this holdfast supports (${REPO_VERSION})`, { version: c.version });
  }
  if (c.version !== REPO_VERSION) bad(`has an invalid version (${typeof c.version === 'number' ? c.version : typeof c.version})`);
  if (typeof c.id !== 'string' || !/^[0-9a-f]{32}$/.test(c.id)) bad('has an invalid repository id');
  if (typeof c.created !== 'string') bad('has no creation time');
  const k = c.chunker as Partial<Record<keyof ChunkerParams, unknown>> | null | undefined;
  const size = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v <= MAX_CHUNK;
  if (typeof k !== 'object' || k === null || !size(k.min) || !size(k.avg) || !size(k.max) || !(k.min <= k.avg && k.avg <= k.max) || typeof k.seed !== 'string') {
    bad('has invalid chunker parameters');
  }
  // Only the known fields: unknown ones are ignored (§4), and are not carried along unvalidated.
  const { version, id, created, chunker } = cfg as RepoConfig;
  return { version, id, created, chunker: { seed: chunker.seed, min: chunker.min, avg: chunker.avg, max: chunker.max } };
}

/** Map a storage failure to the catalogue, naming the object. */
/**
 * Before `init` writes its key: with no config there is no repository yet, so a key file without
 * its copy (or a copy without its key file) is what an `init` that died between the two left.
 * It opens nothing; left there, check would report the missing half forever. A racing `init` that
 * loses its key file this way still opens through the copy it writes next (and check names the
 * loss), so this is safe in that case too. Complete pairs are left alone: Repository.open skips
 * keys that do not open the config.
 */
async function removeHalfKeyPairs(backend: Backend): Promise<void> {
  const ids = async (prefix: string): Promise<Set<string>> => {
    const out = new Set<string>();
    try {
      for await (const o of backend.list(prefix)) out.add(o.name.slice(prefix.length));
    } catch (err) {
      throw storageToHoldfast(err, backend);
    }
    return out;
  };
  const keys = await ids('keys/');
  const copies = await ids(`${CATALOG_DIR}/keys/`);
  for (const id of keys) if (!copies.has(id)) await backend.delete(`keys/${id}`).catch(() => undefined);
  for (const id of copies) if (!keys.has(id)) await backend.delete(`${CATALOG_DIR}/keys/${id}`).catch(() => undefined);
}

export function storageToHoldfast(err: unknown, backend: Backend, name?: string, data: Record<string, unknown> = {}): HoldfastError {
  if (err instanceof HoldfastError) return err;
  if (err instanceof StorageError) {
    const object = name ?? err.objectName;
    if (err.hint !== undefined) data = { ...data, hint: err.hint };
    switch (err.kind) {
      case 'not-found':
        return new HoldfastError('OBJECT_MISSING', `${object} is missing from ${backend.location}`, { object, ...data }, { cause: err });
      case 'short-read':
        return new HoldfastError('INTEGRITY', `${object} is truncated: ${err.message}`, { object, ...data }, { cause: err });
      case 'permission':
        return new HoldfastError('PERMISSION_DENIED', `permission denied: ${err.message}`, { object, ...data }, { cause: err });
      default:
        return new HoldfastError('STORAGE_IO', err.message, { object, ...data }, { cause: err });
    }
  }
  return new HoldfastError('INTERNAL', `unexpected error: ${(err as Error)?.message ?? String(err)}`, data, { cause: err });
}
