// talkline's browser client: connect, talk, watch the conversation and its latency.
import "./style.css";
import { LogLevel, PipecatClient, logger } from "@pipecat-ai/client-js";
import { Conversation } from "./conversation.js";
import {
  CLOSE_GOING_AWAY,
  CLOSE_NORMAL,
  INSECURE_PAGE,
  explainClose,
  explainConnectResponse,
  explainMic,
  unreachable,
} from "./errors.js";
import { HistoryView } from "./history.js";
import { TurnClock } from "./latency.js";
import { TalklineTransport, meterLevel } from "./transport.js";

const BOT_READY_TIMEOUT_MS = 30000;
// Resume: after these close codes (1011 only without a fatal error) the page reconnects to
// the same conversation, with this backoff, until the server's resume window is over.
// Never after 1000 (a normal close) or 1008 (refused, or resumed somewhere else).
const RESUME_CODES = new Set([1001, 1006, 1011, 1012]);
const RESUME_BACKOFF_MS = [100, 250, 500, 1000, 2000];
const RECONNECTED =
  "Reconnected: the conversation continues. Anything you said while the connection was down was not heard.";
const MAX_EVENTS = 2000;
// Server messages too frequent to be worth keeping in window.talklineEvents.
const UNRECORDED_TYPES = new Set(["user-audio-level", "bot-audio-level"]);

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const ui = {
  connect: byTestId("connect-button"),
  disconnect: byTestId("disconnect-button"),
  status: byTestId("status"),
  brain: byTestId("brain"),
  banner: byTestId("error-banner"),
  micLevel: byTestId("mic-level"),
  micBar: byTestId("mic-level").firstElementChild,
  userSpeaking: byTestId("user-speaking"),
  botSpeaking: byTestId("bot-speaking"),
  latencySummary: byTestId("latency-summary"),
};
const conversation = new Conversation(byTestId("conversation"), document.getElementById("hint"));
const historyView = new HistoryView(byTestId("history"));

// --- diagnostics -----------------------------------------------------------------------

// Every RTVI message from the server (and a few page events) as {type, t, data}, t in ms
// since the page loaded; read by the browser tests.
window.talklineEvents = [];

function recordEvent(type, data) {
  const events = window.talklineEvents;
  events.push({ type, t: Math.round(performance.now()), data });
  if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
}

// The Pipecat logger prints everything at DEBUG by default, and failures the page explains
// in words as console errors. Keep it to warnings unless the page is opened with ?debug.
const debug = new URLSearchParams(location.search).has("debug");
logger.setLevel(debug ? LogLevel.DEBUG : LogLevel.WARN);
logger.error = (...args) => console.warn("[pipecat]", ...args);

// The client starts some promises it never awaits (a disconnect after a fatal error);
// their failures are already shown in words, so they are logged, not thrown at the console.
window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  console.warn("[talkline] unhandled rejection:", event.reason);
});

// --- view ------------------------------------------------------------------------------

const CONNECTED_STATES = new Set(["connecting", "connected"]);

function setState(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  const live = CONNECTED_STATES.has(state);
  const focusMoves = document.activeElement === (live ? ui.connect : ui.disconnect);
  ui.connect.hidden = live;
  ui.disconnect.hidden = !live;
  if (focusMoves) (live ? ui.disconnect : ui.connect).focus();
}

function showBanner(text, kind = "error") {
  ui.banner.textContent = text;
  ui.banner.dataset.kind = kind;
  ui.banner.hidden = false;
}

function clearBanner() {
  ui.banner.hidden = true;
  ui.banner.textContent = "";
}

function setSpeaking(indicator, active) {
  indicator.dataset.active = String(active);
  indicator.querySelector(".sr-only").textContent = active ? " speaking" : " quiet";
}

let pendingLevel = null;
function showMicLevel(level) {
  if (pendingLevel === null) requestAnimationFrame(drawMicLevel);
  pendingLevel = level;
}

function drawMicLevel() {
  ui.micBar.style.transform = `scaleX(${pendingLevel.toFixed(3)})`;
  ui.micLevel.setAttribute("aria-valuenow", String(Math.round(pendingLevel * 100)));
  pendingLevel = null;
}

function resetIndicators() {
  setSpeaking(ui.userSpeaking, false);
  setSpeaking(ui.botSpeaking, false);
  showMicLevel(0);
}

function showBrain(about) {
  if (about === undefined) {
    ui.brain.textContent = "not connected";
    delete ui.brain.dataset.brain;
    return;
  }
  const brain = about?.brain ?? "unknown";
  ui.brain.textContent = about?.responder ? `${brain} · ${about.responder}` : brain;
  ui.brain.dataset.brain = brain;
  ui.brain.title = about?.session_id ? `Session ${about.session_id}` : "";
}

function showLatencies(latencies) {
  if (latencies.length === 0) {
    ui.latencySummary.textContent = "";
    return;
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  const last = latencies[latencies.length - 1];
  ui.latencySummary.textContent =
    `Response latency: last ${Math.round(last)} ms, median ${Math.round(median)} ms ` +
    `over ${latencies.length} turn${latencies.length === 1 ? "" : "s"}`;
}

// --- session ---------------------------------------------------------------------------

/** The session being shown; callbacks from an older session are ignored. */
let session = null;

class PlainError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

/** POST /connect: the WebSocket URL (and token) for a new session, or to resume one. */
async function requestSession(request = {}) {
  const url = new URL("connect", location.href);
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
      cache: "no-store",
    });
  } catch {
    throw new PlainError(unreachable(url));
  }
  if (!response.ok) throw new PlainError(await explainConnectResponse(response), response.status);
  const body = await response.json().catch(() => ({}));
  const wsUrl = body.ws_url ?? body.wsUrl;
  if (typeof wsUrl !== "string") throw new PlainError("The server's /connect reply has no ws_url.");
  // A relative or http(s) URL is taken relative to this page.
  const ws = new URL(wsUrl, location.href);
  ws.protocol = ws.protocol.replace(/^http/, "ws");
  // The transport refuses any other key ("Unrecognized connection parameter").
  return typeof body.token === "string" ? { wsUrl: ws.href, token: body.token } : { wsUrl: ws.href };
}

function newSession() {
  const s = { closed: null, ending: null, clock: new TurnClock(), latencies: [], over: false, ready: false, readyTimer: 0,
              offer: null, fatal: false, resuming: null };
  const mine = (fn) => (...args) => {
    if (session === s) fn(...args);
  };
  s.transport = new TalklineTransport({
    onRawMessage: mine((msg) => onServerMessage(s, msg)),
    onSocketClosed: mine((code, reason) => {
      s.closed = { code, reason };
      recordEvent("socket-closed", { code, reason });
    }),
    onMicChunk: mine((level) => {
      s.clock.micChunk(level, performance.now());
      showMicLevel(meterLevel(level));
    }),
    onBotSound: mine((t) => onBotSound(s, t)),
  });
  s.client = new PipecatClient({
    transport: s.transport,
    enableMic: true,
    enableCam: false,
    callbacks: {
      onConnected: mine(() => setState("connecting", "Connected. Waiting for the bot…")),
      onBotReady: mine((data) => {
        clearTimeout(s.readyTimer);
        s.ready = true;
        showBrain(data?.about ?? null);
        setState("connected", "Connected. Talk any time.");
        if (s.resuming) {
          recordEvent("reconnected", { about: data?.about ?? {} });
          showBanner(RECONNECTED, "notice");
        }
      }),
      onDisconnected: mine(() => sessionOver(s)),
      onError: mine((message) => onError(s, message)),
      onServerMessage: mine((data) => onAppMessage(s, data)),
      onUserStartedSpeaking: mine(() => {
        s.clock.userStarted();
        setSpeaking(ui.userSpeaking, true);
        conversation.userStartedSpeaking();
      }),
      onUserStoppedSpeaking: mine(() => {
        s.clock.userStopped();
        setSpeaking(ui.userSpeaking, false);
      }),
      onBotStartedSpeaking: mine(() => {
        setSpeaking(ui.botSpeaking, true);
        conversation.botStartedSpeaking();
      }),
      onBotStoppedSpeaking: mine(() => {
        setSpeaking(ui.botSpeaking, false);
        conversation.botStoppedSpeaking();
      }),
      onUserTranscript: mine((data) => conversation.userTranscript(data.text, data.final)),
      onBotOutput: mine((data) => conversation.botOutput(data)),
      onMessageError: mine((message) => console.info("[talkline] error-response:", message.data)),
    },
  });
  return s;
}

/** Bot audio with a voice in it, to be heard at `t`: the answer's latency if it is the first. */
function onBotSound(s, t) {
  const turn = s.clock.botSound(t);
  if (turn === null) return;
  const latency = turn.heard - turn.speechEnd;
  s.latencies.push(latency);
  recordEvent("turn-latency", {
    ms: Math.round(latency),
    speech_end: Math.round(turn.speechEnd),
    heard: Math.round(turn.heard),
  });
  showLatencies(s.latencies);
  conversation.answerLatency(latency);
}

/** Every RTVI message, including those client-js has no callback for. */
function onServerMessage(s, msg) {
  if (!UNRECORDED_TYPES.has(msg.type)) recordEvent(msg.type, msg.data);
  if (msg.type === "bot-interrupted") conversation.botInterrupted();
  // What the bot is about to say (bot-output follows once it is said).
  if (msg.type === "bot-transcription") conversation.botTranscript(msg.data?.text);
}

/** server-message: talkline says why it is about to close the session. */
function onAppMessage(s, data) {
  const payload = data?.type ? data : data?.data;
  if (payload?.type === "session-resumable") {
    // The secret stays in this page's memory only: never logged, never in a URL.
    s.offer = { secret: payload.resume, deadline: performance.now() + payload.window_secs * 1000 };
    return;
  }
  if (payload?.type === "session-moving") {
    showBanner("The server is restarting; the conversation moves to another server…", "notice");
    return;
  }
  if (payload?.type !== "session-ending") return;
  s.ending = payload.message || `The server is ending this session (${payload.reason ?? "no reason given"}).`;
  showBanner(s.ending, "notice");
  setState("connected", "Session ending…");
}

function onError(s, message) {
  const data = message?.data ?? {};
  const text = data.error ?? data.message ?? "Unknown error";
  // The transport reports a closed socket as an error string; the close code is
  // explained when the session is over.
  if (s.closed && /^websocket/.test(text)) return;
  if (data.fatal) s.fatal = true;
  if (message?.type !== "error" || /^websocket/.test(text)) recordEvent("client-error", { error: text, fatal: !!data.fatal });
  if (/^websocket/.test(text)) {
    showBanner(`The connection to the server failed (${text.replace(/^websocket /, "")}).`);
  } else {
    showBanner(`The server reported an error: ${text}${data.fatal ? "" : " (the session goes on)"}`);
  }
}

/** Whether the conversation that closed with `s.closed` can be resumed, and how. */
function resumeOffer(s) {
  const offer = s.offer ?? s.resuming;
  const code = s.closed?.code;
  // A session the server ended on purpose (session-ending: timeouts, shutdown) stays ended.
  if (!offer || s.fatal || s.ending || !RESUME_CODES.has(code) || performance.now() > offer.deadline) return null;
  return offer;
}

function sessionOver(s) {
  if (s.over) return;
  s.over = true;
  clearTimeout(s.readyTimer);
  const offer = session === s ? resumeOffer(s) : null;
  if (offer) return resume(offer);
  if (session === s) session = null;
  if (!s.ready) showBrain(undefined);
  resetIndicators();
  const closed = s.closed;
  if (closed) {
    const ended = s.ending && (closed.code === CLOSE_NORMAL || closed.code === CLOSE_GOING_AWAY);
    showBanner(ended ? s.ending : explainClose(closed.code, closed.reason), ended ? "notice" : "error");
  }
  setState("idle", closed ? "Disconnected by the server." : "Disconnected.");
  historyView.sessionEnded();
}

function fail(s, text) {
  if (session !== s) return;
  showBanner(text);
  session = null;
  s.over = true;
  clearTimeout(s.readyTimer);
  showBrain(undefined);
  resetIndicators();
  setState("idle", "Not connected.");
  s.client.disconnect().catch((e) => console.info("[talkline] disconnect after failure:", e));
}

async function connect() {
  if (session) return;
  clearBanner();
  conversation.clear();
  showLatencies([]);
  ui.brain.textContent = "…";
  delete ui.brain.dataset.brain;
  setState("connecting", "Asking for the microphone…");
  const s = newSession();
  session = s;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) return fail(s, INSECURE_PAGE);
  try {
    await s.client.initDevices();
  } catch (e) {
    console.info("[talkline] initDevices:", e);
  }
  if (session !== s) return;
  if (!s.client.tracks().local.audio) return fail(s, explainMic(s.client.mediaState));

  setState("connecting", "Contacting the server…");
  let params;
  try {
    params = await requestSession();
  } catch (e) {
    return fail(s, e instanceof PlainError ? e.message : `Could not start a session: ${e}`);
  }
  if (session !== s) return;

  setState("connecting", "Opening the connection…");
  s.readyTimer = setTimeout(
    () => fail(s, `The server accepted the connection but the bot did not start within ${BOT_READY_TIMEOUT_MS / 1000} s.`),
    BOT_READY_TIMEOUT_MS,
  );
  s.client.connect(params).catch((e) => {
    console.info("[talkline] connect:", e);
    if (s.closed) return; // explained from the close code
    fail(s, `Could not open the WebSocket to ${params.wsUrl}. The server may have refused it or be unreachable.`);
  });
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Reconnect to the same conversation (a new socket, the same Gemini conversation). */
async function resume(offer) {
  const s = newSession();
  s.resuming = offer;
  session = s;
  resetIndicators();
  showBanner("Reconnecting… The connection dropped; the conversation will continue.", "notice");
  setState("connecting", "Reconnecting…");
  recordEvent("reconnecting", {});
  let params = null;
  for (let attempt = 0; session === s && performance.now() < offer.deadline; attempt++) {
    try {
      params = await requestSession({ resume: offer.secret });
      break;
    } catch (e) {
      if (e.status === 403 || e.status === 410) break;
      await sleep(RESUME_BACKOFF_MS[Math.min(attempt, RESUME_BACKOFF_MS.length - 1)]);
    }
  }
  if (session !== s) return;
  if (!params) return fail(s, "The conversation could not be resumed. Press Connect to start a new one.");
  try {
    await s.client.initDevices();
  } catch (e) {
    console.info("[talkline] initDevices:", e);
  }
  if (session !== s) return;
  s.readyTimer = setTimeout(() => fail(s, "The conversation could not be resumed in time."), BOT_READY_TIMEOUT_MS);
  s.client.connect(params).catch((e) => console.info("[talkline] resume connect:", e));
}

async function disconnect() {
  const s = session;
  if (!s) return;
  session = null;
  s.over = true;
  clearTimeout(s.readyTimer);
  if (!s.ready) showBrain(undefined);
  resetIndicators();
  setState("idle", "Disconnected.");
  try {
    await s.client.disconnect();
  } catch (e) {
    console.info("[talkline] disconnect:", e);
  }
  historyView.sessionEnded();
}

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", disconnect);
setState("idle", "Not connected.");
resetIndicators();
