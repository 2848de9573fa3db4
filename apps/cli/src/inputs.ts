import { opendir, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';

/** File endings taken when a directory is walked; a file named on the command line is always taken. */
export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);

export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * The image files under the given paths, as absolute paths: directories walked recursively
 * (entries in name order, so runs are repeatable), files taken as named. A path that does not
 * exist is a usage error, found before any work starts.
 */
export async function* imageFiles(paths: readonly string[]): AsyncGenerator<string> {
  const roots = await Promise.all(
    paths.map(async (path) => {
      const absolute = resolve(path);
      const info = await stat(absolute).catch(() => {
        throw new UsageError(`no such file or directory: ${path}`);
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
  const entries: { name: string; isDirectory: boolean }[] = [];
  for await (const entry of await opendir(dir)) {
    if (entry.isDirectory()) entries.push({ name: entry.name, isDirectory: true });
    else if ((entry.isFile() || entry.isSymbolicLink()) && IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) {
      entries.push({ name: entry.name, isDirectory: false });
    }
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* walk(path);
    else yield path;
  }
}
