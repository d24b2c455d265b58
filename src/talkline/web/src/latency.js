// Response latency as the user lives it: from the end of their speech, as the page's mic
// hears it, to the moment the bot's voice leaves the speaker.
//
// The server's user-stopped-speaking comes only after its VAD has heard enough silence, its
// turn model has agreed and often after transcription, so timing from it would leave all
// of that out. Instead the page remembers when it last recorded a chunk at speech level;
// when the server says the user stopped, that time is where the turn's latency starts.
// It ends at the first bot audio with a voice in it, at the time the player will play it
// (its queue and the output latency included), not when the RTVI event arrives.
import { SPEECH_RMS } from "./transport.js";

export class TurnClock {
  constructor() {
    this.lastVoicedAt = null; // performance.now() of the last mic chunk at speech level
    this.speechEndedAt = null; // end of the speech of the turn waiting for its answer
  }

  /** A mic chunk of RMS `level` was recorded at `t`. */
  micChunk(level, t) {
    if (level >= SPEECH_RMS) this.lastVoicedAt = t;
  }

  /** The server's user-started-speaking: a turn with no answer yet is superseded. */
  userStarted() {
    this.speechEndedAt = null;
  }

  /** The server's user-stopped-speaking: the turn's speech ended at its last voiced chunk. */
  userStopped() {
    this.speechEndedAt = this.lastVoicedAt;
    this.lastVoicedAt = null;
  }

  /** Bot voice heard at `t`: the turn's {speechEnd, heard} times, or null if no turn waits. */
  botSound(t) {
    if (this.speechEndedAt === null) return null;
    const turn = { speechEnd: this.speechEndedAt, heard: t };
    this.speechEndedAt = null;
    return turn;
  }
}
