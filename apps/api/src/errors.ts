import type { FastifyReply } from 'fastify';
import { ERRORS, type ErrorCode } from '@facefleet/protocol';

/** An HTTP refusal with a registry code: answered as `{"error", "code"}` with the code's status. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return ERRORS[this.code].httpStatus;
  }
}

export function sendError(reply: FastifyReply, code: ErrorCode, message: string): FastifyReply {
  const status = ERRORS[code].httpStatus;
  if (status === 503) void reply.header('retry-after', '5');
  return reply.code(status).type('application/json').send({ error: message, code });
}

/** A job's failed reason as the worker writes it (`CODE: message`), back into code and message. */
export function parseFailedReason(reason: string): { code: ErrorCode; message: string } {
  const match = /^([A-Z0-9_]+): (.*)$/s.exec(reason);
  const code = match?.[1];
  if (code && Object.hasOwn(ERRORS, code))
    return { code: code as ErrorCode, message: match[2] ?? reason };
  return { code: 'INTERNAL', message: reason };
}
