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

/** Mic level of one chunk of 16-bit PCM, from 0 (silence) to 1 (full scale). */
export function micLevel(buffer) {
  const samples = new Int16Array(buffer, 0, buffer.byteLength >> 1);
  if (samples.length === 0) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  const rms = Math.sqrt(sum / samples.length) / 32768;
  const db = 20 * Math.log10(rms || 1e-9);
  return Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
}

/**
 * WebSocketTransport with WavMediaManager (no CDN download, unlike the default
 * DailyMediaManager) and hooks the public client API does not offer:
 *  - onRawMessage(msg): every RTVI message from the server, before the client handles it
 *    (client-js drops types it does not know, such as bot-interrupted);
 *  - onSocketClosed(code, reason): the server closed the socket (the client only reports
 *    an error string with the code, never the reason);
 *  - onMicLevel(level): the level of each mic chunk (WavMediaManager reports none).
 */
export class TalklineTransport extends WebSocketTransport {
  constructor(hooks) {
    super({
      mediaManager: new WavMediaManager(MIC_CHUNK_BYTES, MIC_SAMPLE_RATE),
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
    this._hooks.onMicLevel(micLevel(data));
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
