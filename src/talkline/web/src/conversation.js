// The live conversation: one list item per user turn and per bot answer.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function joinText(a, b) {
  if (!a || !b || /\s$/.test(a) || /^\s/.test(b)) return a + b;
  return `${a} ${b}`;
}

/** Everything the bot said in one answer, kept as segments keyed by segment_id. */
class BotMessage {
  constructor() {
    this.item = el("li", "msg bot");
    this.item.dataset.testid = "bot-message";
    this.item.append(el("span", "sr-only", "Bot: "));
    this.text = el("p", "text");
    this.text.dataset.testid = "message-text";
    this.item.append(this.text);
    this.segments = new Map();
    this.latencyMs = null;
    this.badge = null;
  }

  get hasWords() {
    return this.text.textContent.trim() !== "";
  }

  /** Shows a segment: `spoken` in full colour, `pending` (not yet spoken) lighter. */
  setSegment(key, spoken, pending) {
    let seg = this.segments.get(key);
    if (!seg) {
      seg = { wrap: el("span"), spoken: el("span", "spoken"), pending: el("span", "pending") };
      seg.pending.setAttribute("aria-hidden", "true");
      if (this.segments.size > 0) seg.wrap.append(" ");
      seg.wrap.append(seg.spoken, seg.pending);
      this.text.append(seg.wrap);
      this.segments.set(key, seg);
    }
    seg.spoken.textContent = spoken;
    seg.pending.textContent = pending && spoken && !/\s$/.test(spoken) ? ` ${pending}` : pending;
    this._showLatency();
  }

  /** Drops the segments whose key starts with `prefix`. */
  dropSegments(prefix) {
    for (const [key, seg] of this.segments) {
      if (!String(key).startsWith(prefix)) continue;
      seg.wrap.remove();
      this.segments.delete(key);
    }
    this._showLatency();
  }

  setLatency(ms) {
    this.latencyMs = ms;
    this._showLatency();
  }

  /** The latency badge shows only beside the words it belongs to. */
  _showLatency() {
    if (this.latencyMs === null || !this.hasWords) {
      this.badge?.remove();
      this.badge = null;
      return;
    }
    if (this.badge) return;
    const ms = Math.round(this.latencyMs);
    this.badge = el("span", "latency", `${ms} ms`);
    this.badge.dataset.testid = "latency";
    this.badge.dataset.ms = String(ms);
    this.badge.title = "Response latency: from the end of your speech to the start of the bot's voice";
    this.text.after(this.badge);
  }

  markInterrupted() {
    if (this.item.classList.contains("interrupted")) return;
    this.item.classList.add("interrupted");
    const note = el("span", "note", "interrupted");
    note.dataset.testid = "interrupted";
    this.item.append(note);
  }
}

/** One user turn: final text, then the interim (not yet final) text, lighter. */
class UserMessage {
  constructor() {
    this.item = el("li", "msg user empty");
    this.item.append(el("span", "sr-only", "You: "));
    const text = el("span", "text");
    text.dataset.testid = "message-text";
    this.final = el("span", "final");
    this.interim = el("span", "interim");
    this.interim.setAttribute("aria-hidden", "true");
    text.append(this.final, this.interim);
    this.item.append(text);
  }

  get empty() {
    return !this.final.textContent && !this.interim.textContent;
  }

  update(text, final) {
    if (final) {
      this.final.textContent = joinText(this.final.textContent, text);
      this.interim.textContent = "";
    } else {
      this.interim.textContent = this.final.textContent ? ` ${text}` : text;
    }
    // Only a turn with words counts as a user message (VAD alone does not).
    this.item.classList.toggle("empty", this.empty);
    if (!this.empty) this.item.dataset.testid = "user-message";
  }
}

export class Conversation {
  constructor(list, hint) {
    this.list = list;
    this.hint = hint;
    this.clear();
  }

  clear() {
    this.list.replaceChildren();
    this.user = null;
    this.bot = null;
    this.answering = null; // the bot message whose answer is being spoken
    this.botOutputSeen = false;
    this.hint.hidden = false;
  }

  _add(message) {
    this.list.append(message.item);
    this.hint.hidden = true;
    message.item.scrollIntoView?.({ block: "nearest" });
    return message;
  }

  /** A new user turn starts; it is placed now so late transcripts still land above the answer. */
  userStartedSpeaking() {
    if (this.user?.empty && !this.bot) return;
    if (this.user?.empty) this.user.item.remove();
    this.user = this._add(new UserMessage());
    this.bot = null;
  }

  userTranscript(text, final) {
    if (!text) return;
    this.user ??= this._add(new UserMessage());
    this.user.update(text, final);
  }

  _botMessage() {
    this.bot ??= this._add(new BotMessage());
    return this.bot;
  }

  /** Where the bot's words go: the answer being spoken, even once the user speaks again. */
  _answer() {
    return this.answering ?? this._botMessage();
  }

  /** bot-output (RTVI 2.x): one segment, with how much of it has been spoken. */
  botOutput(data) {
    if (!data?.text) return;
    this.botOutputSeen = true;
    const bot = this._answer();
    bot.dropSegments("planned");
    const key = data.segment_id ?? `seq${bot.segments.size}`;
    const progress = data.spoken_progress;
    if (progress) {
      bot.setSegment(key, progress.accumulated_text ?? "", progress.remaining_text ?? "");
    } else {
      bot.setSegment(key, data.text, "");
    }
  }

  /**
   * bot-transcription: what the bot is about to say, sent before it says it. Pipecat sends
   * bot-output only once a sentence has been spoken, so an answer cut off mid-sentence
   * has only this text. Where bot-output comes, this is shown as not yet spoken until
   * bot-output replaces it; for servers without bot-output it is the answer's text.
   */
  botTranscript(text) {
    if (!text) return;
    const bot = this._answer();
    const key = `planned${bot.segments.size}`;
    if (this.botOutputSeen) bot.setSegment(key, "", text);
    else bot.setSegment(key, text, "");
  }

  botStartedSpeaking() {
    this.answering = this._botMessage();
  }

  botStoppedSpeaking() {
    this.answering = null;
  }

  /** The current answer's response latency; shown once the answer has words. */
  answerLatency(ms) {
    const bot = this._botMessage();
    if (bot.latencyMs === null) bot.setLatency(ms);
  }

  /**
   * bot-interrupted: the answer being spoken was cut off. The server sends it on every
   * user turn, after user-started-speaking (which already began a new turn), so it marks
   * the answer still being spoken, if any, not the latest bubble.
   */
  botInterrupted() {
    this.answering?.markInterrupted();
    this.answering = null;
  }
}
