import type { z } from 'zod';

/**
 * Parses settings once, reporting every bad value in one error that names where settings come
 * from (`hint`), rather than stopping at the first.
 */
export function parseSettings<S extends z.ZodType>(
  schema: S,
  value: unknown,
  what: string,
  hint: string,
): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;

  const problems = parsed.error.issues
    .map((i) => `${String(i.path[0] ?? '')}: ${i.message}`)
    .join('; ');
  throw new Error(`invalid ${what} (${problems}); see ${hint}`);
}
