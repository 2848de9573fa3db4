import { ERRORS, type ErrorCode, type Problem } from '@facefleet/protocol';

/**
 * A failure with a code from the registry. Thrown inside the engine and turned into a `failed`
 * status at the edge, so that one bad image never stops a batch.
 */
export class FaceFleetError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FaceFleetError';
    this.code = code;
  }

  get retryable(): boolean {
    return ERRORS[this.code].retryable;
  }

  toProblem(): Problem {
    return { code: this.code, message: this.message };
  }
}

/** Any thrown value as a coded problem; unknown faults become INTERNAL. */
export function toProblem(error: unknown): Problem {
  if (error instanceof FaceFleetError) return error.toProblem();

  const message = error instanceof Error ? error.message : String(error);
  return { code: 'INTERNAL', message };
}
