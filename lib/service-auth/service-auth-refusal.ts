import { AtProtoServiceAuthError } from '../errors/at-proto-service-auth.error.js';
import { sanitizeLogText } from '../errors/describe-error.js';

/**
 * The error for a refusal of `com.atproto.server.getServiceAuth` by the PDS (a 4xx other
 * than 401 and 429), named after the rule that refused. The reference PDS
 * (`@atproto/pds` 0.5, `api/com/atproto/server/getServiceAuth.js`) answers every rule with
 * `InvalidRequest` (or `BadExpiration`) and a fixed message, and a missing OAuth scope with a
 * 403: the message tells the rules apart. An unknown message is `refused`, with the PDS's
 * own message (made safe to print) in the error's.
 * @internal
 */
export function serviceAuthRefusal(
  status: number,
  body: unknown,
  request: { aud: string; lxm: string | null },
): AtProtoServiceAuthError {
  const answer = (typeof body === 'object' && body !== null ? body : {}) as {
    error?: unknown;
    message?: unknown;
  };
  const pdsError = typeof answer.error === 'string' ? answer.error.slice(0, 100) : undefined;
  const pdsMessage = typeof answer.message === 'string' ? answer.message : '';
  const details = { pdsError, status };
  const method = request.lxm ?? 'no method';
  if (/more than an hour/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'expiration-too-far',
      'The PDS refused a service-auth token: exp is more than an hour ahead (its maximum).',
      details,
    );
  }
  if (/method-less/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'methodless-expiration-too-far',
      'The PDS refused a service-auth token without lxm: exp is more than a minute ahead. Name the method (lxm) or ask for at most 60 s.',
      details,
    );
  }
  if (/expiration is in past/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'expiration-in-past',
      'The PDS refused a service-auth token: exp has already passed.',
      details,
    );
  }
  if (/protected method/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'protected-method',
      `The PDS never issues service-auth tokens for ${method}: account-management methods must be called on the PDS itself.`,
      details,
    );
  }
  if (/insufficient access/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'privileged-method',
      `A service-auth token for ${method} needs a privileged app password; this session's is not.`,
      details,
    );
  }
  if (status === 403 || /missing required scope/i.test(pdsMessage)) {
    return new AtProtoServiceAuthError(
      'scope-not-granted',
      `The OAuth session's scope does not allow a service-auth token for ${method} at ${request.aud}: ` +
        `the login must ask for rpc:${request.lxm ?? '*'}?aud=${request.aud} (or transition:generic; chat.bsky.* needs transition:chat.bsky).`,
      details,
    );
  }
  return new AtProtoServiceAuthError(
    'refused',
    `The PDS refused a service-auth token (${status}${pdsError ? ` ${pdsError}` : ''}): ${sanitizeLogText(pdsMessage.slice(0, 300)) || 'no message'}`,
    details,
  );
}
