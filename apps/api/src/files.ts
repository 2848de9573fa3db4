import { readlink, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { ApiError } from './errors.js';

/**
 * Where an HTTP caller's `file` may point: inside one of the roots once `..` and every symbolic
 * link on the way are resolved. Outside, the answer is the same whether the file exists or not,
 * so the API cannot be used to probe the host's files. Returns the resolved path, which is what
 * the worker reads.
 */
export async function allowedFile(path: string, roots: readonly string[]): Promise<string> {
  const refuse = () =>
    new ApiError(
      'FILE_NOT_ALLOWED',
      'file jobs over HTTP may only name files under FACEFLEET_FILE_ROOTS',
    );
  if (roots.length === 0 || !isAbsolute(path)) throw refuse();

  const realRoots = await Promise.all(
    roots.map((root) => realpath(root).catch(() => resolve(root))),
  );
  const real = await resolveExisting(resolve(path));
  if (!realRoots.some((root) => within(real, root))) throw refuse();
  return real;
}

/**
 * Where a path leads once every link on it is followed, as far as things exist, with the part that
 * does not exist appended. A dangling link is followed by name too: otherwise a link to a missing
 * file outside a root would look inside, and the worker's FILE_NOT_FOUND would tell what exists.
 */
async function resolveExisting(path: string, hops = 0): Promise<string> {
  const found = await realpath(path).catch(() => undefined);
  if (found !== undefined) return found;

  const parentPath = dirname(path);
  const parent = parentPath === path ? path : await resolveExisting(parentPath, hops);
  const candidate = join(parent, basename(path));
  const link = hops < 40 ? await readlink(candidate).catch(() => undefined) : undefined;
  return link === undefined ? candidate : resolveExisting(resolve(parent, link), hops + 1);
}

function within(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}
