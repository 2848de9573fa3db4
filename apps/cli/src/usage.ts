import { z } from 'zod';

/** A mistake in the command line: reported in one line, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Zod's issues about parsed options, each named by its flag: "--min-confidence: Too big: …". */
export function optionIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const flag = issue.path
        .map((p) => `--${String(p).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`)
        .join(' ');
      return flag ? `${flag}: ${issue.message}` : issue.message;
    })
    .join('; ');
}

/** A regular expression given as a flag, compiled, or an issue naming what is wrong with it. */
export const regexOption = z
  .string()
  .optional()
  .transform((pattern, ctx) => {
    if (pattern === undefined) return undefined;
    try {
      return new RegExp(pattern);
    } catch {
      ctx.addIssue({ code: 'custom', message: `not a valid regular expression: ${pattern}` });
      return z.NEVER;
    }
  });
