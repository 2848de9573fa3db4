import { createReadStream } from 'node:fs';
import { opendir, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { groupOf, idFromPath, type Job } from '@facefleet/protocol';

/** File endings taken when a directory is walked; a file named on the command line is always taken. */
export const IMAGE_EXTENSIONS = new Set([
  '.jpg',
  '.jpeg',
  '.jpe',
  '.jfif',
  '.png',
  '.webp',
  '.gif',
  '.tif',
  '.tiff',
  '.avif',
]);

/** A path given to walk does not exist: the caller's mistake, found before any work starts. */
export class PathNotFoundError extends Error {
  override name = 'PathNotFoundError';
}

/**
 * The image files under the given paths, as absolute paths: directories walked recursively as a
 * stream, files taken as named. A path that does not exist throws PathNotFoundError before any is yielded.
 */
export async function* imageFiles(paths: readonly string[]): AsyncGenerator<string> {
  const roots = await Promise.all(
    paths.map(async (path) => {
      const absolute = resolve(path);
      const info = await stat(absolute).catch(() => {
        throw new PathNotFoundError(`no such file or directory: ${path}`);
      });
      return { absolute, isDirectory: info.isDirectory() };
    }),
  );

  for (const root of roots) {
    if (root.isDirectory) yield* walk(root.absolute);
    else yield root.absolute;
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  // Files stream out as the directory is read: a folder of a million frames is never held in
  // memory. Subdirectories (few) are kept and walked afterwards, in name order.
  const subdirs: string[] = [];
  for await (const entry of await opendir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) subdirs.push(path);
    else if (
      (entry.isFile() || entry.isSymbolicLink()) &&
      IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())
    ) {
      yield path;
    }
  }

  for (const subdir of subdirs.sort()) yield* walk(subdir);
}

/**
 * Lines of a list (one path or URL per line, `#` comments and blank lines skipped), streamed from a
 * file or from stdin (`-`).
 */
export async function* listLines(file: string): AsyncGenerator<string> {
  const input = file === '-' ? process.stdin : createReadStream(file);
  const lines = createInterface({ input, crlfDelay: Infinity });
  for await (const raw of lines) {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) yield line;
  }
}

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** The entries of a list: URLs as they are, folders walked, other lines as paths. */
export async function* listSources(file: string): AsyncGenerator<string> {
  for await (const line of listLines(file)) {
    if (SCHEME.test(line)) {
      yield line;
      continue;
    }
    const info = await stat(line).catch(() => undefined);
    if (info?.isDirectory()) yield* walk(resolve(line));
    else yield line;
  }
}

/**
 * A job for one path or URL of a list or a walk. Paths become absolute: the key derives from
 * them. Anything with a scheme is a URL, so that `ftp://…` is refused as one, not sought as a file.
 */
export function jobFor(entry: string, group?: RegExp): Job {
  const isUrl = SCHEME.test(entry);
  const id = isUrl
    ? (URL.canParse(entry) && idFromPath(new URL(entry).pathname)) || entry
    : idFromPath(entry);
  const source = isUrl ? { url: entry } : { file: resolve(entry) };
  return { id, ...source, ...(group ? { group: groupOf(id, group) } : {}) };
}
