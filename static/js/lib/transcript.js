// The conversation as the page shows it. Pure module: it turns server events
// into a list of entries; the view renders entries by id.
//
// Entry: {id, role: "user"|"assistant"|"error", text, partial, status, ...}
//   user       from input.transcript (partial while final is false; the next
//              partial or the final replaces its text) or a typed turn; a final
//              with joined: true is the whole of the turn the last final began
//              (the user went on before hearing its reply): it replaces that
//              entry's text, and the joined part's own entry goes (hidden: true)
//   assistant  one per response_id: deltas append, text.done replaces
//              with the whole text, response.done / interrupted set status
//   error      error events, shown plainly

export class Transcript {
  /** @param {object} [options] @param {number} [options.maxEntries=500] */
  constructor({ maxEntries = 500 } = {}) {
    this.maxEntries = maxEntries;
    this.entries = [];
    this._nextId = 1;
    this._pendingUser = null; // entry receiving partial transcripts
    this._byResponse = new Map(); // response_id -> entry
    this._lastTyped = null; // typed entry the server may echo as a transcript
    this._lastFinal = null; // the last final user transcript's entry
  }

  _add(fields) {
    const entry = { id: this._nextId++, text: "", partial: false, status: null, ...fields };
    this.entries.push(entry);
    while (this.entries.length > this.maxEntries) {
      const old = this.entries.shift();
      if (old.responseId !== undefined) this._byResponse.delete(old.responseId);
      if (old === this._pendingUser) this._pendingUser = null;
      if (old === this._lastTyped) this._lastTyped = null;
      if (old === this._lastFinal) this._lastFinal = null;
    }
    return entry;
  }

  /** A typed turn the user just sent. */
  addTypedText(text) {
    const entry = this._add({ role: "user", text, typed: true });
    this._lastTyped = entry;
    return [entry];
  }

  /** A line from the page itself (e.g. "microphone refused"). */
  addNotice(text, role = "notice") {
    return [this._add({ role, text })];
  }

  /**
   * Apply one server event. Returns the entries created or changed (for the
   * view to render), possibly empty.
   */
  apply(event) {
    switch (event.type) {
      case "input.transcript":
        if (event.joined === true && event.final !== false && this._lastFinal) {
          return this._joinedTranscript(String(event.text ?? ""));
        }
        return this._userTranscript(String(event.text ?? ""), event.final !== false);
      case "response.started":
        return [this._assistant(event.response_id)];
      case "response.text.delta": {
        const e = this._assistant(event.response_id);
        e.text += String(event.delta ?? "");
        return [e];
      }
      case "response.text.done": {
        // The whole text: final from here on, even while its audio plays.
        const e = this._assistant(event.response_id);
        e.text = String(event.text ?? "");
        e.partial = false;
        return [e];
      }
      case "response.done": {
        const e = this._byResponse.get(event.response_id);
        if (!e) return [];
        e.partial = false;
        e.status = event.status === "interrupted" ? "interrupted" : "completed";
        return [e];
      }
      case "interrupted": {
        const e = this._byResponse.get(event.response_id);
        if (!e) return [];
        e.partial = false;
        e.status = "interrupted";
        return [e];
      }
      case "error":
        return [
          this._add({
            role: "error",
            text: String(event.message ?? ""),
            code: String(event.code ?? "error"),
            fatal: event.fatal === true,
          }),
        ];
      default:
        return [];
    }
  }

  _userTranscript(text, final) {
    let entry = this._pendingUser;
    if (!entry) {
      // The server may echo a typed turn as its transcript: do not repeat it.
      const typed = this._lastTyped;
      if (final && typed && typed === this.entries[this.entries.length - 1] && typed.text.trim() === text.trim()) {
        this._lastTyped = null;
        return [];
      }
      entry = this._add({ role: "user", partial: true });
      this._pendingUser = entry;
    }
    this._lastTyped = null;
    entry.text = text;
    entry.partial = !final;
    if (final) {
      this._pendingUser = null;
      this._lastFinal = entry;
    }
    return [entry];
  }

  _joinedTranscript(text) {
    const entry = this._lastFinal;
    entry.text = text;
    const changed = [entry];
    const pending = this._pendingUser;
    if (pending && pending !== entry) {
      this.entries = this.entries.filter((e) => e !== pending);
      pending.hidden = true;
      changed.push(pending);
    }
    this._pendingUser = null;
    return changed;
  }

  _assistant(responseId) {
    const key = responseId ?? "?";
    let entry = this._byResponse.get(key);
    if (!entry) {
      entry = this._add({ role: "assistant", partial: true, responseId: key });
      this._byResponse.set(key, entry);
    }
    return entry;
  }

  /**
   * The socket dropped: no more events will come for what is open. Open
   * entries (a partial user transcript, a streaming response) are closed as
   * they stand. Returns the entries changed.
   */
  closeOpen() {
    const changed = [];
    for (const e of this.entries) {
      if (e.partial || (e.role === "assistant" && e.status === null)) {
        e.partial = false;
        if (e.role === "assistant") e.status = "cut";
        changed.push(e);
      }
    }
    this._pendingUser = null;
    this._byResponse.clear();
    this._lastTyped = null;
    return changed;
  }

  clear() {
    this.entries = [];
    this._pendingUser = null;
    this._byResponse.clear();
    this._lastTyped = null;
  }
}
