/**
 * Exclude patterns for backup.
 *
 * - A pattern without '/' matches the name of a file or directory at any depth: `*.tmp`, `.cache`.
 * - A pattern with '/' matches the whole absolute path when it starts with '/', else any
 *   trailing run of path components: `/home/*\/.cache`, `build/output`.
 * - `*` matches within one component, `**` across components, `?` one character, `[abc]` a set.
 * An excluded directory is not descended into.
 */
export class Excluder {
  private readonly byName: RegExp[] = [];
  private readonly byPath: RegExp[] = [];

  constructor(readonly patterns: readonly string[]) {
    for (const p of patterns) {
      if (p === '') continue;
      const trimmed = p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
      if (!trimmed.includes('/')) this.byName.push(new RegExp(`^${globToRegex(trimmed)}$`, 's'));
      else if (trimmed.startsWith('/')) this.byPath.push(new RegExp(`^${globToRegex(trimmed)}$`, 's'));
      else this.byPath.push(new RegExp(`(?:^|/)${globToRegex(trimmed)}$`, 's'));
    }
  }

  get empty(): boolean {
    return this.byName.length === 0 && this.byPath.length === 0;
  }

  excluded(absPath: string, name: string): boolean {
    return this.byName.some((r) => r.test(name)) || this.byPath.some((r) => r.test(absPath));
  }
}

export function globToRegex(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          out += '(?:.*/)?';
        } else out += '.*';
      } else out += '[^/]*';
    } else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end === -1) out += '\\[';
      else {
        let set = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        if (set.startsWith('!')) set = '^' + set.slice(1);
        out += `(?!/)[${set}]`; // like "?", a set never matches "/"
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return out;
}
