/**
 * The error a request promise rejects with.
 *
 * `code` is one of the gateway's error codes (`NOT_A_MEMBER`, `INVALID_CHAT`, `AUTH_EXPIRED`…)
 * when the gateway answered the request with an `error`, or one of the client's own codes when
 * no answer came:
 *
 * - `TIMEOUT`: no answer within the request timeout (the request may still have taken effect);
 * - `DISCONNECTED`: the connection closed before the answer (the request may have taken effect);
 * - `CLOSED`: the application closed the client, or it stopped for good (revoked, refused token).
 */
export class GogateError extends Error {
  override readonly name = "GogateError";

  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** The codes of {@link GogateError} that the client itself gives. */
export const ClientErrorCode = {
  TIMEOUT: "TIMEOUT",
  DISCONNECTED: "DISCONNECTED",
  CLOSED: "CLOSED",
} as const;
