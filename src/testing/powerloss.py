#!/usr/bin/python3
"""powerloss: faultfs with a durability model, to simulate losing power at a chosen moment.

Test tooling for holdfast (driven by src/testing/powerloss.ts; Debian python3-fusepy). The mount
is faultfs.py's passthrough of BACKING (its fault rules and control file work as there); on top
of it this daemon keeps track of what a disk would still hold if the power went out now, under a
conservative POSIX model:

- At mount, everything in BACKING is durable.
- File data, per inode (the backing st_ino, stable across renames): the durable content is what
  the file held at its last fsync or fdatasync (or at mount; a file created since is empty).
  Writes and truncates after that are not durable.
- Directory entries: the durable listing of a directory is what it held at its last fsyncdir (or
  at mount; a directory created since is empty). create, mknod, mkdir, symlink, link, unlink,
  rmdir and rename (in both directories) become durable only when that directory is fsynced. An
  fsync of a file does not persist its name. Node fsyncs a directory by opening it (FUSE sends
  OPENDIR) and calling fsync on the descriptor (FUSE sends FSYNCDIR); both arrive here.
- Metadata (modes, owners, times, xattrs) and syncfs are not modelled: modes and owners in the
  image are the current ones.

Inode numbers must stay unique for the life of the mount, and the content of a removed file may
still be the durable content of a name that was never durably removed. So nothing is ever really
removed from BACKING: unlink and rmdir move the entry into STATE/graveyard (same filesystem), and
a rename over an existing file first hard-links the victim there. The caller sees normal POSIX
behaviour.

Copy-on-write keeps memory small: a file whose live content is its durable content is tracked by
nothing at all; the first write or truncate after a durable point copies the durable content to
STATE/store/ (new files need no copy: their durable content is empty), and fsync drops the copy.
In tear mode the last write to each file since its last fsync is also kept in memory (one FUSE
write: at most 128 KiB).

Crash point. Mutating operations are counted: write, truncate, create, mknod, mkdir, symlink,
link, unlink, rmdir, rename, fsync, fsyncdir, and open with O_TRUNC. With crashAfter N the first
N are performed and operation N+1 is the crash: the filesystem freezes, that operation and every
later one (reads and getattr included; close still works) fail with EIO, and the
durable image is written to STATE/image.json. A crash can also be asked for at any time with
{"crash": true} in the power-loss control file; it happens at the next operation of any kind
(powerloss.ts then makes one). Modes:

  discard  everything not durable is lost.
  tear     as discard, and additionally the last write (by time) among the files that are
           regular files in the durable image and have a write since their last fsync is applied
           partially onto that file's durable content: a prefix ending at a 512-byte or 4-KiB
           file-offset boundary strictly inside the write (granularity and boundary chosen by
           the seed; 512 when no 4-KiB boundary falls inside). A write inside one 512-byte
           sector is atomic: applied wholly or not at all, by the seed.

STATE/image.json (written once, at the crash):

  {"version": 1, "mode": "discard", "seed": 7, "crashAfter": 12, "mutations": 12,
   "reason": "crashAfter" | "requested", "op": "write",
   "root": <ino of BACKING>,
   "dirs":  {"<ino>": {"<name>": <ino>, ...}, ...},   durable listing of every directory
   "files": {"<ino>": "<name in STATE/store>" | "", ...},   durable content when not the live
                                                             one ("" is empty); other inodes'
                                                             live content is durable
   "tear": null | {"ino": …, "offset": …, "length": …, "cut": …, "granularity": 512 | 4096}}

Every inode named in "dirs" still exists below BACKING or STATE/graveyard, so the image can be
materialised (powerloss.ts materialise()) after this daemon is gone. STATE/ops.log has one JSON
line per counted operation, {"n": 3, "op": "rename", "path": "a.tmp", "path2": "a", "err":
null}, and a last line {"n": N+1, "op": …, "crash": true}.

Power-loss control file (re-read when its (mtime, inode, size) changes):
  {"crashAfter": null | N, "crash": false | true}

Usage: powerloss.py --control FILE --log FILE --state DIR [--mode discard|tear] [--seed N]
                    [--allow-other] BACKING MOUNTPOINT
"""

import errno
import json
import os
import random
import shutil
import stat
import sys
import threading

import faultfs
from faultfs import FaultFS, FuseOSError, Operations, rel

# Operations counted towards the crash point (open only with O_TRUNC).
MUTATING = frozenset((
    'write', 'truncate', 'create', 'mknod', 'mkdir', 'symlink', 'link', 'unlink', 'rmdir',
    'rename', 'fsync', 'fsyncdir', 'open',
))
# Operations that still work after the crash: they only free descriptors (flush does nothing
# here, and failing it would only make the writer's close() fail).
AFTER_CRASH = frozenset(('release', 'releasedir', 'flush', 'destroy', 'init'))
# One FUSE write is at most this big (big_writes, libfuse 2): bounds the tear mode's memory.
MAX_WRITE = 128 * 1024


def eio():
    return FuseOSError(errno.EIO)


class PowerLossFS(FaultFS):
    def __init__(self, backing, faults, on_init, state, mode, seed):
        super().__init__(backing, faults, on_init)
        self.state = os.path.realpath(state)
        self.mode = mode
        self.seed = seed
        self.rng = random.Random('powerloss:%d' % seed)
        self.graveyard = os.path.join(self.state, 'graveyard')
        self.store = os.path.join(self.state, 'store')
        self.control_file = os.path.join(self.state, 'control.json')
        self.lock = threading.RLock()
        self.frozen = False
        self.crash_after = None
        self.crash_now = False
        self.control_sig = None
        self.count = 0
        self.buried = 0
        self.copies = 0
        self.dirs = {}     # ino -> {name: ino}: the durable listing of every directory
        self.files = {}    # ino -> store name, or '' (empty): durable content unlike the live one
        self.pending = {}  # ino -> (seq, offset, bytes): tear mode, last write since fsync
        self.seq = 0
        for d in (self.graveyard, self.store):
            os.makedirs(d, exist_ok=True)
        # A remount starts a new model: what an earlier daemon kept is no longer referenced.
        for d in (self.graveyard, self.store):
            for e in os.listdir(d):
                full = os.path.join(d, e)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
        for f in ('image.json', 'image.json.tmp'):
            try:
                os.unlink(os.path.join(self.state, f))
            except FileNotFoundError:
                pass
        real = self.root + os.sep
        if (self.state + os.sep).startswith(real):
            raise SystemExit('powerloss: the state directory %s is inside the backing directory'
                             % self.state)
        if os.lstat(self.graveyard).st_dev != os.lstat(self.root).st_dev:
            raise SystemExit('powerloss: %s and %s are on different filesystems (the graveyard '
                             'must be able to rename and link backing files)'
                             % (self.state, self.root))
        self.root_ino = os.lstat(self.root).st_ino
        self._scan()
        self.ops_log = open(os.path.join(self.state, 'ops.log'), 'w', buffering=1,
                            encoding='utf-8')
        self._poll_control()

    # -- the model

    def _scan(self):
        """Everything in BACKING is durable at mount: record every directory's listing."""
        stack = [self.root]
        for _ in range(10_000_000):
            if not stack:
                break
            d = stack.pop()
            entries = {}
            with os.scandir(d) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    entries[e.name] = st.st_ino
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
            self.dirs[os.lstat(d).st_ino] = entries

    def _poll_control(self):
        try:
            st = os.stat(self.control_file)
        except FileNotFoundError:
            return
        sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        if sig == self.control_sig:
            return
        try:
            with open(self.control_file, encoding='utf-8') as f:
                doc = json.load(f)
            after = doc.get('crashAfter')
            if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                      or after < 0):
                raise ValueError('crashAfter must be null or a non-negative integer')
            now = doc.get('crash', False)
            if not isinstance(now, bool):
                raise ValueError('crash must be true or false')
        except (OSError, ValueError) as e:
            print('powerloss: ignoring control file %s: %s' % (self.control_file, e),
                  file=sys.stderr, flush=True)
            return
        self.control_sig, self.crash_after, self.crash_now = sig, after, now

    def _cow(self, ino, source):
        """Before the live content of `ino` changes: keep its durable content if that is the
        live one. `source` is a backing path or a descriptor (possibly write-only)."""
        if ino in self.files:
            return
        name = '%d-%d' % (ino, self.copies)
        self.copies += 1
        if isinstance(source, int):
            src = os.open('/proc/self/fd/%d' % source, os.O_RDONLY)
        else:
            src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            dst = os.open(os.path.join(self.store, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                          0o600)
            try:
                size = os.fstat(src).st_size
                off = 0
                while off < size:
                    n = os.sendfile(dst, src, off, size - off)
                    if n == 0:
                        break
                    off += n
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.files[ino] = name

    def _drop(self, ino):
        """`ino`'s live content is durable now."""
        name = self.files.pop(ino, None)
        if name:
            try:
                os.unlink(os.path.join(self.store, name))
            except FileNotFoundError:
                pass
        self.pending.pop(ino, None)

    def _bury(self, full, st):
        """Move the entry at `full` into the graveyard: its inode lives on (see the module doc)."""
        self.buried += 1
        grave = os.path.join(self.graveyard, '%d-%d' % (st.st_ino, self.buried))
        os.rename(full, grave)
        return grave

    def _listing(self, fd):
        return {n: os.stat(n, dir_fd=fd, follow_symlinks=False).st_ino for n in os.listdir(fd)}

    def _log(self, entry):
        try:
            self.ops_log.write(json.dumps(entry) + '\n')
        except (OSError, ValueError):
            pass

    def _freeze(self, reason, op):
        self.frozen = True
        tear = self._tear() if self.mode == 'tear' else None
        image = {
            'version': 1, 'mode': self.mode, 'seed': self.seed, 'crashAfter': self.crash_after,
            'mutations': self.count, 'reason': reason, 'op': op, 'root': self.root_ino,
            'dirs': {str(k): v for k, v in self.dirs.items()},
            'files': {str(k): v for k, v in self.files.items()},
            'tear': tear,
        }
        tmp = os.path.join(self.state, 'image.json.tmp')
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(image, f)
        os.replace(tmp, os.path.join(self.state, 'image.json'))
        self.pending.clear()

    def _reachable_files(self):
        """Inodes that are entries (not directories) of the durable image."""
        out, seen, stack = set(), set(), [self.root_ino]
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            for ino in self.dirs.get(d, {}).values():
                if ino in self.dirs:
                    stack.append(ino)
                else:
                    out.add(ino)
        return out

    def _tear(self):
        reachable = self._reachable_files()
        candidates = [(w[0], ino) for ino, w in self.pending.items() if ino in reachable]
        if not candidates:
            return None
        _seq, ino = max(candidates)
        _seq, offset, data = self.pending[ino]
        end = offset + len(data)
        gran = self.rng.choice((512, 4096))
        cuts = []
        for g in ((gran, 512) if gran == 4096 else (512,)):
            first = (offset // g + 1) * g
            cuts = list(range(first, end, g))
            if cuts:
                gran = g
                break
        if cuts:
            cut = self.rng.choice(cuts)
        else:
            gran = 512
            cut = self.rng.choice((offset, end))  # inside one sector: all or nothing
        base = self.files.get(ino, '')
        name = '%d-torn' % ino
        out = os.path.join(self.store, name)
        with open(out, 'wb') as f:
            if base:
                with open(os.path.join(self.store, base), 'rb') as b:
                    for _ in range(1 << 30):
                        chunk = b.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
            if cut > offset:
                f.seek(offset)
                f.write(data[:cut - offset])
        self.files[ino] = name
        return {'ino': ino, 'offset': offset, 'length': len(data), 'cut': cut,
                'granularity': gran}

    # -- dispatch

    def __call__(self, op, *args):
        with self.lock:
            if not self.frozen:
                self._poll_control()
                if self.crash_now:
                    self._log({'n': self.count + 1, 'op': op, 'crash': True})
                    self._freeze('requested', op)
            if self.frozen and op not in AFTER_CRASH:
                raise eio()
        if op in faultfs.OPS:
            n = 2 if op in faultfs.TWO_PATHS else 1
            self.faults.check(op, [rel(p) for p in args[:n]])
        if op not in MUTATING or (op == 'open' and not args[1].flags & os.O_TRUNC):
            return Operations.__call__(self, op, *args)
        with self.lock:
            if self.frozen:
                raise eio()
            if self.crash_after is not None and self.count >= self.crash_after:
                self._log({'n': self.count + 1, 'op': op, 'crash': True})
                self._freeze('crashAfter', op)
                raise eio()
            self.count += 1
            entry = {'n': self.count, 'op': op}
            if op not in ('write', 'fsync', 'fsyncdir', 'truncate') or args[0] is not None:
                entry['path'] = rel(args[0])
            if op in faultfs.TWO_PATHS:
                entry['path2'] = rel(args[1])
            err = None
            try:
                return Operations.__call__(self, op, *args)
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno))
                raise
            finally:
                entry['err'] = err
                self._log(entry)

    # -- names (called with self.lock held)

    def create(self, path, mode, fi):
        full = self._full(path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            st = None
        if st is not None:  # created meanwhile by someone else: an open
            if fi.flags & os.O_EXCL:
                raise FuseOSError(errno.EEXIST)
            if fi.flags & os.O_TRUNC and stat.S_ISREG(st.st_mode):
                self._cow(st.st_ino, full)
                self.pending.pop(st.st_ino, None)
            fi.fh = os.open(full, fi.flags & ~os.O_CREAT)
            fi.direct_io = 1
            return
        super().create(path, mode, fi)
        self.files[os.fstat(fi.fh).st_ino] = ''

    def mknod(self, path, mode, dev):
        super().mknod(path, mode, dev)
        if stat.S_ISREG(mode):
            self.files[os.lstat(self._full(path)).st_ino] = ''

    def mkdir(self, path, mode):
        super().mkdir(path, mode)
        self.dirs[os.lstat(self._full(path)).st_ino] = {}

    def unlink(self, path):
        full = self._full(path)
        st = os.lstat(full)
        if stat.S_ISDIR(st.st_mode):
            raise FuseOSError(errno.EISDIR)
        self._bury(full, st)

    def rmdir(self, path):
        full = self._full(path)
        st = os.lstat(full)
        if not stat.S_ISDIR(st.st_mode):
            raise FuseOSError(errno.ENOTDIR)
        if os.listdir(full):
            raise FuseOSError(errno.ENOTEMPTY)
        self._bury(full, st)

    def rename(self, old, new):
        src, dst = self._full(old), self._full(new)
        so = os.lstat(src)
        try:
            sn = os.lstat(dst)
        except FileNotFoundError:
            sn = None
        if sn is None or sn.st_ino == so.st_ino:
            os.rename(src, dst)  # no victim (or the same inode: rename does nothing)
            return
        if stat.S_ISDIR(sn.st_mode):
            if not stat.S_ISDIR(so.st_mode):
                raise FuseOSError(errno.EISDIR)
            if os.listdir(dst):
                raise FuseOSError(errno.ENOTEMPTY)
            grave = self._bury(dst, sn)
            try:
                os.rename(src, dst)
            except OSError:
                os.rename(grave, dst)
                raise
            return
        if stat.S_ISDIR(so.st_mode):
            raise FuseOSError(errno.ENOTDIR)
        # Keep the victim's inode: a hard link in the graveyard, then the atomic rename over it.
        self.buried += 1
        grave = os.path.join(self.graveyard, '%d-%d' % (sn.st_ino, self.buried))
        os.link(dst, grave, follow_symlinks=False)
        try:
            os.rename(src, dst)
        except OSError:
            os.unlink(grave)
            raise

    # -- data (called with self.lock held)

    def open(self, path, fi):
        # Only with O_TRUNC (see __call__); the kernel usually sends a truncate instead.
        full = self._full(path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            self._cow(st.st_ino, full)
            self.pending.pop(st.st_ino, None)
        super().open(path, fi)

    def truncate(self, path, length, fh=None):
        if fh:
            ino = os.fstat(fh.fh).st_ino
            self._cow(ino, fh.fh)
        else:
            full = self._full(path)
            ino = os.lstat(full).st_ino
            self._cow(ino, full)
        self.pending.pop(ino, None)  # the last write is not the last change any more
        super().truncate(path, length, fh)

    def write(self, path, data, offset, fi):
        st = os.fstat(fi.fh)
        self._cow(st.st_ino, fi.fh)
        if fi.flags & os.O_APPEND:
            offset = st.st_size  # pwrite on an O_APPEND descriptor appends
        n = super().write(path, data, offset, fi)
        if self.mode == 'tear':
            self.seq += 1
            self.pending[st.st_ino] = (self.seq, offset, bytes(data[:min(n, MAX_WRITE)]))
        return n

    def fsync(self, path, datasync, fi):
        # The model decides what is durable; the backing disk's own fsync would only cost time.
        self._drop(os.fstat(fi.fh).st_ino)

    def fsyncdir(self, path, datasync, fh):
        self.dirs[os.fstat(fh).st_ino] = self._listing(fh)


def main():
    ap = faultfs.arg_parser('FUSE passthrough that simulates power loss at a chosen moment')
    ap.add_argument('--state', required=True, help='model state: graveyard, store, image.json')
    ap.add_argument('--mode', choices=('discard', 'tear'), default='discard')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    fs = [None]

    def make(faults, ready):
        fs[0] = PowerLossFS(args.backing, faults, ready, args.state, args.mode, args.seed)
        return fs[0]

    faultfs.serve(args, make)


if __name__ == '__main__':
    main()
