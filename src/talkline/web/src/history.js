// The "History" view: the last conversations and their transcripts, from GET /sessions.
// With access control on, /sessions wants an API key: the view asks for one and keeps it
// for this tab only (sessionStorage).

const LIMIT = 10;
const KEY_STORAGE = "talkline-history-key";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function ms(value) {
  return value === null || value === undefined ? "" : `${Math.round(value)} ms`;
}

/** One line about a session: when, how long, how it ended, answers and latency. */
export function describeSession(s) {
  const when = new Date(s.started_at).toLocaleString();
  const length = s.duration_secs === null ? "live" : `${Math.round(s.duration_secs)} s`;
  const answers = `${s.turns} answer${s.turns === 1 ? "" : "s"}`;
  const latency = s.latency_p50_ms === null ? "" : ` · p50 ${ms(s.latency_p50_ms)}`;
  return `${when} · ${length} · ${s.end_reason ?? "live"} · ${answers}${latency}`;
}

export class HistoryView {
  constructor(root) {
    const find = (id) => root.querySelector(`[data-testid="${id}"]`);
    this.root = root;
    this.status = find("history-status");
    this.list = find("history-list");
    this.keyForm = find("history-key-form");
    this.keyInput = find("history-key");
    root.addEventListener("toggle", () => root.open && this.refresh());
    this.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, this.keyInput.value.trim());
      this.refresh();
    });
  }

  /** After a session ends: its record is there now (or very soon). */
  sessionEnded() {
    if (this.root.open) setTimeout(() => this.refresh(), 1000);
  }

  async _get(path) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch(new URL(path, location.href), { headers, cache: "no-store" });
    if (response.status === 401) {
      this.keyForm.hidden = false;
      throw new Error("The history needs an API key.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail ?? `The server answered ${response.status}.`);
    this.keyForm.hidden = true;
    return body;
  }

  async refresh() {
    this.status.textContent = "Loading…";
    try {
      const page = await this._get(`sessions?limit=${LIMIT}`);
      this.list.replaceChildren(...page.sessions.map((s) => this._item(s)));
      this.status.textContent = page.total ? `The last ${page.sessions.length} of ${page.total} sessions.` : "No sessions yet.";
    } catch (error) {
      this.list.replaceChildren();
      this.status.textContent = error.message;
    }
  }

  _item(summary) {
    const item = el("li", "history-session");
    item.dataset.testid = "history-session";
    item.dataset.sessionId = summary.id;
    const row = el("button", "history-row", describeSession(summary));
    row.type = "button";
    row.setAttribute("aria-expanded", "false");
    const transcript = el("ol", "history-transcript");
    transcript.dataset.testid = "history-transcript";
    transcript.hidden = true;
    row.addEventListener("click", () => this._toggle(summary.id, row, transcript));
    item.append(row, transcript);
    return item;
  }

  async _toggle(id, row, transcript) {
    const open = transcript.hidden;
    row.setAttribute("aria-expanded", String(open));
    transcript.hidden = !open;
    if (!open) return;
    try {
      const detail = await this._get(`sessions/${encodeURIComponent(id)}`);
      const turns = detail.transcript.map((turn) => this._turn(turn));
      transcript.replaceChildren(...(turns.length ? turns : [el("li", "history-empty", "No transcript kept.")]));
    } catch (error) {
      transcript.replaceChildren(el("li", "history-empty", error.message));
    }
  }

  _turn(turn) {
    const line = el("li", `history-turn ${turn.role}`);
    line.append(el("span", "history-time", clock(turn.at)), el("span", "history-role", turn.role === "user" ? "You" : "Bot"));
    line.append(el("span", "history-text", turn.text));
    const notes = [turn.interrupted ? "interrupted" : "", ms(turn.latency_ms)].filter(Boolean);
    if (notes.length) line.append(el("span", "note", notes.join(" · ")));
    return line;
  }
}
