import { basename, extname } from 'node:path';

/** Where records of ids without a group go: `OUT/faces.json`. */
export const DEFAULT_GROUP = 'faces';

const FRAME_SUFFIX = /^(.*)-\d+$/;

/** The id of a file: its name without directory and extension. */
export function idFromPath(path: string): string {
  const name = basename(path);
  return name.slice(0, name.length - extname(name).length) || name;
}

/**
 * The group of an id: with a pattern, its first capture group (or the whole match when it has
 * none); without one, the id minus a trailing `-<digits>` (one file per broadcast). Ids that do
 * not match go to `faces`. The result is always safe as a file name.
 */
export function groupOf(id: string | number, pattern?: RegExp): string {
  const text = String(id);
  const match = pattern ? pattern.exec(text) : FRAME_SUFFIX.exec(text);
  const group = pattern ? (match?.[1] ?? match?.[0]) : match?.[1];
  return group ? safeGroupName(group) : DEFAULT_GROUP;
}

/** Groups become file names: keep them to one path segment of ordinary characters. */
export function safeGroupName(group: string): string {
  const safe = group
    .replace(/[^\p{L}\p{N}._-]+/gu, '_')
    .replace(/^\.+/, '_')
    .slice(0, 200);
  return safe === '' ? DEFAULT_GROUP : safe;
}
