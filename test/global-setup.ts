import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TESTDATA } from './helpers.js';

/** Fails the run at once, with the fix, when the shared test images are not where tests look. */
export default function setup(): void {
  if (!existsSync(join(TESTDATA, 'EXPECTED.json'))) {
    throw new Error(
      `The test images are not at ${TESTDATA}. Put shared/testdata beside this checkout ` +
        '(../shared/testdata) or set FACEFLEET_TESTDATA to its path.',
    );
  }
}
