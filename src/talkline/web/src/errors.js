// Turns what went wrong into words a person can act on.

export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_ABNORMAL = 1006;
export const CLOSE_POLICY_VIOLATION = 1008;
export const CLOSE_INTERNAL_ERROR = 1011;
export const CLOSE_TRY_AGAIN_LATER = 1013;

const CLOSE_WORDS = {
  [CLOSE_NORMAL]: "The server ended the session.",
  [CLOSE_GOING_AWAY]: "The server is going away (restarting or shutting down). Try again in a moment.",
  [CLOSE_ABNORMAL]: "The connection to the server was lost.",
  [CLOSE_POLICY_VIOLATION]:
    "The server refused this session (policy violation, for example a missing or invalid token).",
  [CLOSE_INTERNAL_ERROR]: "The server hit an internal error and ended the session.",
  [CLOSE_TRY_AGAIN_LATER]: "The server is full or shutting down. Try again in a moment.",
};

/** What to tell the user when the server closed the socket with `code` and `reason`. */
export function explainClose(code, reason) {
  const words = CLOSE_WORDS[code] ?? `The server closed the connection (code ${code}).`;
  return reason ? `${words} Server said: “${reason}”` : words;
}

/** What to tell the user when POST /connect failed. */
export async function explainConnectResponse(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = body.detail ?? body.error ?? body.message ?? body.info ?? "";
    if (typeof detail !== "string") detail = JSON.stringify(detail);
  } catch {
    // Not JSON: the status alone has to do.
  }
  const said = detail ? ` Server said: “${detail}”` : "";
  const status = response.status;
  if (status === 401 || status === 403) return `The server refused to start a session (HTTP ${status}).${said}`;
  if (status === 404 || status === 405 || status === 501) {
    return `This server has no talkline /connect endpoint (HTTP ${status}). Is the page served by talkline?`;
  }
  if (status === 429 || status === 503) return `The server is busy and not taking new sessions (HTTP ${status}).${said}`;
  return `The server could not start a session (HTTP ${status}).${said}`;
}

export function unreachable(url) {
  return `Can't reach the talkline server at ${url.origin}. Is it running? (make run)`;
}

/** Why the microphone could not be opened, from the client's media state. */
export function explainMic(mediaState) {
  const mic = mediaState?.mic;
  if (mic?.state === "error" && (mic.reason === "blocked" || mic.reason === "permissions")) {
    return "Microphone access is blocked. Allow the microphone for this page (the icon in the address bar) and press Connect again.";
  }
  if (mic?.state === "error" && mic.reason === "in-use") {
    return "The microphone is in use by another application. Close it and press Connect again.";
  }
  return "No microphone could be opened. Check that one is connected and allowed for this page, then press Connect again.";
}

export const INSECURE_PAGE =
  "The browser only allows the microphone on secure pages: open this page over https, or as http://localhost.";
