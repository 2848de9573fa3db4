// Writes docs/errors.md from the error registry (run after `npm run build`):
//   node scripts/error-docs.mjs
// test/error-docs.test.ts fails when the page and the registry differ.
import { writeFileSync } from 'node:fs';
import { ERRORS } from '../packages/protocol/dist/index.js';

const lines = [
  '# Error codes',
  '',
  'Every failed image status (`{"status": "failed", "error": {"code", "message"}}`) and every refused',
  'request carries one of these codes. The registry is `packages/protocol/src/errors.ts`;',
  '`test/error-docs.test.ts` keeps this page equal to it (regenerate with `node scripts/error-docs.mjs`).',
  '',
  '| code | HTTP | retry helps | meaning |',
  '| --- | --- | --- | --- |',
  ...Object.entries(ERRORS).map(
    ([code, e]) =>
      `| \`${code}\` | ${e.httpStatus} | ${e.retryable ? 'yes' : 'no'} | ${e.description} |`,
  ),
  '',
  "`IMAGE_TRUNCATED` is a warning: it appears in a status's `warnings` list, beside `ok` or",
  '`no_faces`, when a cut-off image was decoded as far as its data goes.',
  '',
];
writeFileSync(new URL('../docs/errors.md', import.meta.url), lines.join('\n'));
