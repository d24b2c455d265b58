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
  }

  /** Drops the segments whose key starts with `prefix`. */
  dropSegments(prefix) {
    for (const [key, seg] of this.segments) {
      if (!String(key).startsWith(prefix)) continue;
      seg.wrap.remove();
      this.segments.delete(key);
    }
  }

  setLatency(ms) {
    const badge = el("span", "latency", `${Math.round(ms)} ms`);
    badge.dataset.testid = "latency";
    badge.dataset.ms = String(Math.round(ms));
    badge.title = "Response latency: from the end of your speech to the start of the bot's voice";
    this.item.append(badge);
  }

  markInterrupted() {
    if (this.item.classList.contains("interrupted")) return;
    this.item.classList.add("interrupted");
    this.item.append(el("span", "note", "interrupted"));
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

  /** bot-output (RTVI 2.x): one segment, with how much of it has been spoken. */
  botOutput(data) {
    if (!data?.text) return;
    if (!this.botOutputSeen) {
      this.botOutputSeen = true;
      this.bot?.dropSegments("legacy");
    }
    const bot = this._botMessage();
    const key = data.segment_id ?? `seq${bot.segments.size}`;
    const progress = data.spoken_progress;
    if (progress) {
      bot.setSegment(key, progress.accumulated_text ?? "", progress.remaining_text ?? "");
    } else {
      bot.setSegment(key, data.text, "");
    }
  }

  /** bot-transcription, for servers that send no bot-output. */
  botTranscript(text) {
    if (this.botOutputSeen || !text) return;
    const bot = this._botMessage();
    bot.setSegment(`legacy${bot.segments.size}`, text, "");
  }

  botStartedSpeaking(latencyMs) {
    const bot = this._botMessage();
    if (latencyMs != null && !bot.item.querySelector(".latency")) bot.setLatency(latencyMs);
  }

  botInterrupted() {
    this.bot?.markInterrupted();
  }
}
