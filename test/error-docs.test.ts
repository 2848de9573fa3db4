import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '@facefleet/protocol';
import { REPO } from './helpers.js';

describe('docs/errors.md', () => {
  it('lists every code of the registry with its HTTP status, retry flag and meaning, and no other', () => {
    const page = readFileSync(join(REPO, 'docs', 'errors.md'), 'utf8');
    const rows = [...page.matchAll(/^\| `([A-Z0-9_]+)` \| (\d+) \| (yes|no) \| (.+) \|$/gm)].map(
      (m) => ({
        code: m[1],
        httpStatus: Number(m[2]),
        retryable: m[3] === 'yes',
        description: m[4],
      }),
    );
    const registry = Object.entries(ERRORS).map(([code, spec]) => ({ code, ...spec }));

    expect(rows).toEqual(registry);
  });
});
