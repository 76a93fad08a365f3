#!/usr/bin/python3
"""faultfs: a FUSE passthrough filesystem that fails chosen operations on demand.

Test tooling for holdfast (driven by src/testing/faultfs.ts; Debian python3-fusepy, installed by
scripts/fuse-deps.sh). It mirrors BACKING at MOUNTPOINT and, before each operation, consults a
JSON control file that lives outside the mount:

    {"rules": [{"op": "open", "errno": "ESTALE", "path": "*.lock", "count": 1}],
     "all": null}

rules  Checked in order; the first rule that matches an operation and still has shots left fires:
       the operation is not performed and returns the errno.
         op     an operation name (see OPS), a list of them, or "*" for every operation in OPS.
         errno  a name ("ESTALE", "EIO", "ENOENT", ...) or a positive number.
         path   fnmatch glob against the path relative to the mount root, without a leading "/"
                ("." is the root). "*" also matches "/", so "*.lock" matches "a/b.lock". For
                rename and link either path may match. Absent: any path. Operations on an open
                file that has since been unlinked have no path and match only rules without one.
         skip   let this many matching operations through before firing (default 0).
         count  how many times to fire (absent: every time).
all    null, or an errno that every operation in OPS fails with (a remounted share where every
       handle is stale is "ESTALE"). Checked before the rules.

The control file is re-read when its (mtime, inode, size) changes, so write it to a temporary
name and rename it over; faultfs.ts also gives every version its own mtime. Replacing it resets
the rules' skip and count state. Every fault that fires is appended to LOG as one JSON line,
before the failing reply reaches the kernel:

    {"seq": 1, "op": "open", "path": "a/b.lock", "errno": 116, "code": "ESTALE", "rule": 0,
     "pid": 1234, "uid": 0}

(`path2` is added for rename and link, `rule` is null for "all".)

What the caller sees is the kernel's view: with entry and attribute caching off (this mount sets
attr_timeout, entry_timeout and negative_timeout to 0), every path lookup sends a `getattr`, so a
getattr rule also fires on open, unlink, rename, ... of a matching path, and may fire twice for
one system call (a failed revalidation of a cached name is followed by a fresh lookup). Linux
retries a path operation once after ESTALE (LOOKUP_REVAL), so an ESTALE rule on a path operation
may fire twice for one system call, and a rule with count 1 is then invisible to the caller.
Operations on open files (read, write, fsync, flush) are not retried.

Mount: foreground, multi-threaded, direct_io (reads and writes always reach this process, never
the page cache), default_permissions (the kernel checks modes and owners as on a local disk),
hard_remove (no .fuse_hidden files; an unlinked open file stays readable and writable, but
libfuse 2 cannot name it for fstat, which fails with ENOENT), use_ino, and allow_other with
--allow-other. Files, directories, symlinks and nodes created through the mount belong to the
calling process's uid and gid. Locks (flock, fcntl) are handled by the kernel locally.

Prints "ready" on stdout once the kernel has initialised the mount. Reads stdin until EOF, then
unmounts lazily (if still mounted) and exits: a killed test never leaves a mount behind.

Usage: faultfs.py --control FILE --log FILE [--allow-other] BACKING MOUNTPOINT
"""

import argparse
import errno
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading

try:
    import fusepy as fuse  # Debian python3-fusepy
except ImportError:  # pragma: no cover - PyPI's fusepy names the module `fuse`
    import fuse  # type: ignore

FUSE = fuse.FUSE
FuseOSError = fuse.FuseOSError
Operations = fuse.Operations
fuse_get_context = fuse.fuse_get_context

# Operations a rule can name. init, destroy, release and releasedir never fail: the kernel ignores
# release errors, and the backing descriptors must still be closed.
OPS = (
    'access', 'chmod', 'chown', 'create', 'flush', 'fsync', 'fsyncdir', 'getattr', 'link',
    'mkdir', 'mknod', 'open', 'opendir', 'read', 'readdir', 'readlink', 'rename', 'rmdir',
    'statfs', 'symlink', 'truncate', 'unlink', 'utimens', 'write',
)
# Operations whose first two arguments are both paths in this filesystem.
TWO_PATHS = ('rename', 'link')
# fusepy passes these a path that may be None (an unlinked open file).
NULLABLE = ('read', 'write', 'flush', 'fsync', 'fsyncdir', 'getattr', 'truncate', 'readdir')


def errno_of(value):
    if isinstance(value, bool):
        raise ValueError('errno must be a name or a positive number, not %r' % (value,))
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and isinstance(getattr(errno, value, None), int):
        return getattr(errno, value)
    raise ValueError('unknown errno %r' % (value,))


def rel(path):
    if path is None:
        return None
    r = path.lstrip('/')
    return r if r else '.'


class Rule:
    def __init__(self, spec, index):
        if not isinstance(spec, dict):
            raise ValueError('rule %d is not an object' % index)
        unknown = set(spec) - {'op', 'errno', 'path', 'count', 'skip'}
        if unknown:
            raise ValueError('rule %d: unknown keys %s' % (index, sorted(unknown)))
        op = spec.get('op', '*')
        ops = [op] if isinstance(op, str) else op
        if not isinstance(ops, list) or not ops:
            raise ValueError('rule %d: op must be a name or a non-empty list' % index)
        for o in ops:
            if o != '*' and o not in OPS:
                raise ValueError('rule %d: unknown op %r (known: %s)' % (index, o, ', '.join(OPS)))
        self.ops = None if '*' in ops else frozenset(ops)
        self.errno = errno_of(spec.get('errno'))
        self.path = spec.get('path')
        if self.path is not None and not isinstance(self.path, str):
            raise ValueError('rule %d: path must be a string' % index)
        self.count = spec.get('count')
        self.skip = spec.get('skip', 0)
        for name in ('count', 'skip'):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError('rule %d: %s must be a non-negative integer' % (index, name))
        self.index = index
        self.seen = 0
        self.fired = 0

    def matches(self, op, paths):
        if self.ops is not None and op not in self.ops:
            return False
        if self.path is None:
            return True
        return any(p is not None and fnmatch.fnmatchcase(p, self.path) for p in paths)


class Faults:
    """The control file's current rules and the fault log; thread-safe."""

    def __init__(self, control, log):
        self.control = control
        self.lock = threading.Lock()
        self.sig = None
        self.rules = []
        self.all = None
        self.seq = 0
        self.log = open(log, 'a', buffering=1, encoding='utf-8')

    def _reload(self):
        try:
            st = os.stat(self.control)
        except FileNotFoundError:
            sig = None
        else:
            sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        if sig == self.sig:
            return
        if sig is None:
            rules, all_errno = [], None
        else:
            try:
                with open(self.control, encoding='utf-8') as f:
                    doc = json.load(f)
                if not isinstance(doc, dict):
                    raise ValueError('the control file must hold a JSON object')
                rules = [Rule(r, i) for i, r in enumerate(doc.get('rules') or [])]
                all_errno = doc.get('all')
                all_errno = None if all_errno is None else errno_of(all_errno)
            except (OSError, ValueError) as e:
                # Keep the previous rules; try again on the next operation.
                print('faultfs: ignoring control file %s: %s' % (self.control, e), file=sys.stderr,
                      flush=True)
                return
        self.sig, self.rules, self.all = sig, rules, all_errno

    def check(self, op, paths):
        with self.lock:
            self._reload()
            err, rule = None, None
            if self.all is not None:
                err = self.all
            else:
                for r in self.rules:
                    if r.count is not None and r.fired >= r.count:
                        continue
                    if not r.matches(op, paths):
                        continue
                    r.seen += 1
                    if r.seen <= r.skip:
                        continue
                    r.fired += 1
                    err, rule = r.errno, r.index
                    break
            if err is None:
                return
            self.seq += 1
            uid, _gid, pid = fuse_get_context()
            entry = {'seq': self.seq, 'op': op, 'path': paths[0], 'errno': err,
                     'code': errno.errorcode.get(err, str(err)), 'rule': rule, 'pid': pid,
                     'uid': uid}
            if len(paths) > 1:
                entry['path2'] = paths[1]
            self.log.write(json.dumps(entry) + '\n')
        raise FuseOSError(err)


def stat_dict(st):
    return {
        'st_mode': st.st_mode, 'st_ino': st.st_ino, 'st_nlink': st.st_nlink,
        'st_uid': st.st_uid, 'st_gid': st.st_gid, 'st_size': st.st_size,
        'st_rdev': st.st_rdev, 'st_blocks': st.st_blocks, 'st_blksize': st.st_blksize,
        'st_atime': st.st_atime_ns, 'st_mtime': st.st_mtime_ns, 'st_ctime': st.st_ctime_ns,
    }


class FaultFS(Operations):
    use_ns = True  # times are integer nanoseconds
    # Pass path=None for operations on an unlinked open file instead of failing them (hard_remove).
    flag_nullpath_ok = 1

    def __init__(self, backing, faults, on_init):
        self.root = os.path.realpath(backing)
        self.faults = faults
        self.on_init = on_init

    def __call__(self, op, *args):
        if op in OPS:
            n = 2 if op in TWO_PATHS else 1
            self.faults.check(op, [rel(p) for p in args[:n]])
        return super().__call__(op, *args)

    def _full(self, path):
        if path is None:
            raise FuseOSError(errno.ENOENT)
        return os.path.join(self.root, path.lstrip('/'))

    @staticmethod
    def _give_to_caller(full, fd=None):
        uid, gid, _pid = fuse_get_context()
        if fd is not None:
            os.fchown(fd, uid, gid)
        else:
            os.chown(full, uid, gid, follow_symlinks=False)

    # -- lifecycle
    def init(self, path):
        self.on_init()

    # -- metadata
    def getattr(self, path, fh=None):
        if fh:
            return stat_dict(os.fstat(fh.fh))
        return stat_dict(os.lstat(self._full(path)))

    def access(self, path, amode):
        if not os.access(self._full(path), amode, follow_symlinks=False):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._full(path), None, follow_symlinks=False)
        else:
            os.utime(self._full(path), ns=times, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh:
            os.ftruncate(fh.fh, length)
        else:
            os.truncate(self._full(path), length)

    def statfs(self, path):
        sv = os.statvfs(self.root)
        return {k: getattr(sv, k) for k in (
            'f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files',
            'f_flag', 'f_frsize', 'f_namemax')}

    # -- names
    def readlink(self, path):
        return os.readlink(self._full(path))

    def mknod(self, path, mode, dev):
        full = self._full(path)
        os.mknod(full, mode, dev)
        self._give_to_caller(full)

    def mkdir(self, path, mode):
        full = self._full(path)
        os.mkdir(full, mode)
        self._give_to_caller(full)

    def symlink(self, target, source):
        # fusepy: create the symlink `target` pointing at `source`.
        full = self._full(target)
        os.symlink(source, full)
        self._give_to_caller(full)

    def link(self, target, source):
        # fusepy: create the hard link `target` to the existing `source`.
        os.link(self._full(source), self._full(target))

    def unlink(self, path):
        os.unlink(self._full(path))

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def rename(self, old, new):
        os.rename(self._full(old), self._full(new))

    # -- directories
    def opendir(self, path):
        return os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)

    def readdir(self, path, fh):
        names = os.listdir(self._full(path)) if path is not None else os.listdir(fh)
        return ['.', '..'] + names

    def fsyncdir(self, path, datasync, fh):
        os.fsync(fh)

    def releasedir(self, path, fh):
        os.close(fh)

    # -- files (raw_fi: `fi` is the fuse_file_info, fi.fh our backing descriptor)
    def open(self, path, fi):
        fi.fh = os.open(self._full(path), fi.flags)
        fi.direct_io = 1

    def create(self, path, mode, fi):
        full = self._full(path)
        fd = os.open(full, fi.flags | os.O_CREAT, mode)
        try:
            self._give_to_caller(full, fd)
        except OSError:
            os.close(fd)
            raise
        fi.fh = fd
        fi.direct_io = 1

    def read(self, path, size, offset, fi):
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
        return os.pwrite(fi.fh, data, offset)

    def flush(self, path, fi):
        return 0

    def fsync(self, path, datasync, fi):
        if datasync:
            os.fdatasync(fi.fh)
        else:
            os.fsync(fi.fh)

    def release(self, path, fi):
        os.close(fi.fh)


def fusermount():
    return shutil.which('fusermount') or shutil.which('fusermount3') or 'fusermount'


def watch_parent(mountpoint):
    """When stdin reaches EOF (the parent unmounted us, gave up on us or died): unmount lazily if
    still mounted, and exit. Exiting also ends a mount that a lazy unmount left alive for open
    descriptors: they then fail with ENOTCONN, as on a share that went away."""
    try:
        while os.read(0, 4096):  # the raw descriptor: a buffered reader would stall shutdown
            pass
    except OSError:
        pass
    try:
        subprocess.run([fusermount(), '-u', '-z', mountpoint], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                       check=False)
    except (OSError, subprocess.SubprocessError):
        pass
    os._exit(0)


def arg_parser(description):
    """The arguments every faultfs-based daemon takes (powerloss.py adds its own)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--control', required=True, help='JSON control file (outside the mount)')
    ap.add_argument('--log', required=True, help='fired faults, one JSON line each')
    ap.add_argument('--allow-other', action='store_true', help='let other users use the mount')
    ap.add_argument('backing')
    ap.add_argument('mountpoint')
    return ap


def serve(args, make_fs):
    """Mount make_fs(faults, on_init) at args.mountpoint with the options described above, print
    "ready" once the kernel has initialised it, and exit when it is unmounted or stdin closes."""
    os.umask(0)  # the kernel has applied the caller's umask to the modes it sends
    faults = Faults(args.control, args.log)

    def ready():
        print('ready', flush=True)

    threading.Thread(target=watch_parent, args=(args.mountpoint,), daemon=True).start()
    opts = dict(
        foreground=True, fsname='faultfs', subtype='faultfs', default_permissions=True,
        attr_timeout=0, entry_timeout=0, negative_timeout=0, hard_remove=True, use_ino=True,
        direct_io=True, big_writes=True,
    )
    if args.allow_other:
        opts['allow_other'] = True
    try:
        FUSE(make_fs(faults, ready), args.mountpoint, raw_fi=True, **opts)
    except RuntimeError as e:
        print('faultfs: mounting %s failed (%s)' % (args.mountpoint, e), file=sys.stderr,
              flush=True)
        os._exit(1)
    # Unmounted. Exit without interpreter shutdown, which would wait on the stdin watcher.
    sys.stdout.flush()
    os._exit(0)


def main():
    args = arg_parser('FUSE passthrough that fails operations on demand').parse_args()
    serve(args, lambda faults, ready: FaultFS(args.backing, faults, ready))


if __name__ == '__main__':
    main()
