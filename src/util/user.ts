import { userInfo } from 'node:os';

/** The current user's name, or "unknown" when the uid has no passwd entry (containers). */
export function currentUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}
