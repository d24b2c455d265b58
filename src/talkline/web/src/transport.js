// The official WebSocket transport, set up for talkline and given three small hooks.
import { WavMediaManager, WebSocketTransport } from "@pipecat-ai/websocket-transport";

// The server's VAD runs at 16 kHz and the transport does not resample, so the page
// records at 16 kHz. Bot audio plays at 24 kHz: WavMediaManager's player is fixed at
// 24000 Hz and ignores the frame's sample_rate, so the server must send 24 kHz.
export const MIC_SAMPLE_RATE = 16000;
// Bytes of 16-bit mono PCM per audio frame sent: 512 samples, 32 ms at 16 kHz.
const MIC_CHUNK_BYTES = 1024;
// Mic levels below this many dBFS show as an empty meter.
const METER_FLOOR_DB = -60;
// A chunk of audio counts as speech at or above this RMS (full scale 1): int16 RMS 300,
// about -41 dBFS, the level `talkline talk` calls voiced. Chrome's mic (noise suppression
// and automatic gain on by default) gives room noise and breath well below it, -55 dBFS
// and quieter, and speech above it, -35 to -10 dBFS, so a soft word ending still counts.
export const SPEECH_RMS = 300 / 32768;
// Bot audio is scanned for its first voice in windows of this many samples (10 ms at 24 kHz).
const BOT_WINDOW_SAMPLES = 240;

/** RMS of 16-bit PCM samples, from 0 (silence) to 1 (full scale). */
export function rms(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length) / 32768;
}

/** Meter reading for an RMS level, from 0 (-60 dBFS or quieter) to 1 (full scale). */
export function meterLevel(level) {
  const db = 20 * Math.log10(level || 1e-9);
  return Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

/** Index of the first sample of the first speech-level window, or -1 if none is. */
export function firstVoicedSample(samples) {
  for (let start = 0; start < samples.length; start += BOT_WINDOW_SAMPLES) {
    if (rms(samples.subarray(start, start + BOT_WINDOW_SAMPLES)) >= SPEECH_RMS) return start;
  }
  return -1;
}

/** The performance.now() time at which the context's output reaches the speaker at `contextTime`. */
function heardAt(context, contextTime) {
  // getOutputTimestamp pairs the context time now leaving the output device with
  // performance.now(); it includes the output latency. Before the first render quantum
  // it is all zeros: then count from currentTime plus the latencies the context reports.
  const stamp = context.getOutputTimestamp?.();
  if (stamp?.performanceTime > 0) return stamp.performanceTime + (contextTime - stamp.contextTime) * 1000;
  const latency = (context.baseLatency || 0) + (context.outputLatency || 0);
  return performance.now() + (contextTime - context.currentTime + latency) * 1000;
}

/**
 * WavMediaManager that says when bot audio will actually be heard. Its player
 * (WavStreamPlayer) plays chunks back to back from a queue in an AudioWorklet, starting
 * at the next render quantum when the queue is empty; this mirrors that queue on the
 * context's clock to find when each chunk's first voiced sample leaves the speaker.
 */
class TalklineMediaManager extends WavMediaManager {
  constructor(onBotSound, ...args) {
    super(...args);
    this._onBotSound = onBotSound;
    this._queuedUntil = 0;
  }

  bufferBotAudio(data, id) {
    const context = this._wavStreamPlayer.context;
    const samples = data instanceof Int16Array ? data : new Int16Array(data);
    if (context) {
      const startsAt = Math.max(this._queuedUntil, context.currentTime);
      this._queuedUntil = startsAt + samples.length / context.sampleRate;
      const first = firstVoicedSample(samples);
      if (first >= 0) this._onBotSound(heardAt(context, startsAt + first / context.sampleRate));
    }
    return super.bufferBotAudio(data, id);
  }
}

/**
 * WebSocketTransport with WavMediaManager (no CDN download, unlike the default
 * DailyMediaManager) and hooks the public client API does not offer:
 *  - onRawMessage(msg): every RTVI message from the server, before the client handles it
 *    (client-js drops types it does not know, such as bot-interrupted);
 *  - onSocketClosed(code, reason): the server closed the socket (the client only reports
 *    an error string with the code, never the reason);
 *  - onMicChunk(level): the RMS level of each mic chunk as it is recorded (WavMediaManager
 *    reports none);
 *  - onBotSound(t): bot audio with a voice in it arrived; its voice will be heard at
 *    performance.now() time `t` (see TalklineMediaManager).
 */
export class TalklineTransport extends WebSocketTransport {
  constructor(hooks) {
    super({
      mediaManager: new TalklineMediaManager((t) => hooks.onBotSound(t), MIC_CHUNK_BYTES, MIC_SAMPLE_RATE),
      recorderSampleRate: MIC_SAMPLE_RATE,
    });
    this._hooks = hooks;
    this._closing = null;
  }

  initialize(options, messageHandler) {
    super.initialize(options, (msg) => {
      this._hooks.onRawMessage(msg);
      messageHandler(msg);
    });
  }

  initializeWebsocket() {
    const ws = super.initializeWebsocket();
    // Before the transport's own listener, which turns the close into a fatal error.
    ws.prependListener("close", (code, reason) => this._hooks.onSocketClosed(code, reason));
    return ws;
  }

  handleUserAudioStream(data) {
    this._hooks.onMicChunk(rms(new Int16Array(data, 0, data.byteLength >> 1)));
    super.handleUserAudioStream(data);
  }

  // The client disconnects on its own after a fatal error and the page may ask too:
  // concurrent calls share one disconnect, so the recorder is stopped only once.
  _disconnect() {
    this._closing ??= super._disconnect().finally(() => {
      this._closing = null;
    });
    return this._closing;
  }
}
