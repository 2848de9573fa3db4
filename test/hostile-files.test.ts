import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowedFile } from '@facefleet/api';

let root: string;
let outside: string;

async function refusal(path: string, roots: string[]): Promise<unknown> {
  return allowedFile(path, roots).then(
    (resolved) => ({ allowed: resolved }),
    (error: { code?: string; message?: string }) => ({ code: error.code, message: error.message }),
  );
}

beforeAll(() => {
  const base = mkdtempSync(join(tmpdir(), 'facefleet-roots-'));
  root = join(base, 'root');
  outside = join(base, 'outside');
  mkdirSync(join(root, 'sub'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(root, 'sub', 'in.jpg'), 'x');
  writeFileSync(join(outside, 'secret.jpg'), 'x');
  symlinkSync(join(outside, 'secret.jpg'), join(root, 'link-to-secret.jpg'));
  symlinkSync(join(outside, 'missing.jpg'), join(root, 'link-to-missing.jpg'));
  symlinkSync(outside, join(root, 'dir-link'));
});

afterAll(() => rmSync(join(root, '..'), { recursive: true, force: true }));

describe('file jobs over HTTP and FACEFLEET_FILE_ROOTS', () => {
  it('takes a file under a root, and a missing one there too (the worker says FILE_NOT_FOUND)', async () => {
    expect(await refusal(join(root, 'sub', 'in.jpg'), [root])).toEqual({
      allowed: join(root, 'sub', 'in.jpg'),
    });
    expect(await refusal(join(root, 'sub', 'nope.jpg'), [root])).toEqual({
      allowed: join(root, 'sub', 'nope.jpg'),
    });
  });

  it.each([
    ['../ out of the root', (f: string) => join(root, 'sub', '..', '..', 'outside', f)],
    ['an absolute path outside the roots', (f: string) => join(outside, f)],
    ['a symlinked directory out of the root', (f: string) => join(root, 'dir-link', f)],
  ])('refuses %s with the same answer whether or not the target exists', async (_what, path) => {
    const existing = await refusal(path('secret.jpg'), [root]);
    const missing = await refusal(path('missing.jpg'), [root]);

    expect(existing).toMatchObject({ code: 'FILE_NOT_ALLOWED' });
    expect(missing).toEqual(existing);
  });

  it('refuses a symlink out of the root whether or not its target exists', async () => {
    const existing = await refusal(join(root, 'link-to-secret.jpg'), [root]);
    const missing = await refusal(join(root, 'link-to-missing.jpg'), [root]);

    expect(existing).toMatchObject({ code: 'FILE_NOT_ALLOWED' });
    expect(missing).toEqual(existing);
  });

  it('refuses every file when no root is configured, and relative paths always', async () => {
    expect(await refusal(join(root, 'sub', 'in.jpg'), [])).toMatchObject({
      code: 'FILE_NOT_ALLOWED',
    });
    expect(await refusal('sub/in.jpg', [root])).toMatchObject({ code: 'FILE_NOT_ALLOWED' });
  });
});
