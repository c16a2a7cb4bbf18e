// The room's WebSocket, kept alive: reconnects with backoff to the same URL
// (same session id), sends a ping every 20 s and drops a socket that stays
// silent past the pong deadline. Browser-free: the WebSocket class, timers
// and clock are passed in, so node tests drive it with fakes.
//
// States: idle -> connecting -> open -> (socket closes) -> waiting -> connecting ...
//         disconnect() from any state -> closed

import { parseServerEvent, pingMessage } from "./protocol.js";

export const BACKOFF_DEFAULTS = Object.freeze({ baseMs: 500, maxMs: 15000, factor: 2 });

/**
 * Delay before reconnect attempt `attempt` (0 = first): exponential, capped,
 * with "equal jitter" (between half and all of the step) so that many
 * clients dropped together do not come back in step.
 */
export function backoffDelay(attempt, { baseMs, maxMs, factor } = BACKOFF_DEFAULTS, random = Math.random) {
  const step = Math.min(maxMs, baseMs * Math.pow(factor, Math.max(0, attempt)));
  return Math.round(step / 2 + (random() * step) / 2);
}

const OPEN = 1; // WebSocket.OPEN

export class VoiceSocket {
  /**
   * @param {object} o
   * @param {string} o.url
   * @param {Function} o.WebSocketImpl  WebSocket constructor
   * @param {object} [o.timers]  {setTimeout, clearTimeout, setInterval, clearInterval}
   * @param {() => number} [o.now]  ms clock
   * @param {() => number} [o.random]
   * @param {number} [o.pingIntervalMs=20000]
   * @param {number} [o.pongTimeoutMs=10000]  silence after a ping that counts as dead
   * @param {number} [o.stableMs=10000]  a connection that lived this long resets the backoff
   * @param {object} [o.backoff]  BACKOFF_DEFAULTS fields
   * @param {(state: string, info: object) => void} [o.onState]
   * @param {(event: object) => void} [o.onEvent]  parsed JSON events
   * @param {(data: ArrayBuffer) => void} [o.onAudio]  binary frames
   */
  constructor({
    url,
    WebSocketImpl,
    timers = globalThis,
    now = () => Date.now(),
    random = Math.random,
    pingIntervalMs = 20000,
    pongTimeoutMs = 10000,
    stableMs = 10000,
    backoff = BACKOFF_DEFAULTS,
    onState = () => {},
    onEvent = () => {},
    onAudio = () => {},
  }) {
    if (typeof WebSocketImpl !== "function") throw new TypeError("WebSocketImpl is required");
    this.url = url;
    this._WS = WebSocketImpl;
    this._timers = timers;
    this._now = now;
    this._random = random;
    this.pingIntervalMs = pingIntervalMs;
    this.pongTimeoutMs = pongTimeoutMs;
    this.stableMs = stableMs;
    this.backoff = { ...BACKOFF_DEFAULTS, ...backoff };
    this._onState = onState;
    this._onEvent = onEvent;
    this._onAudio = onAudio;

    this.state = "idle";
    this.ws = null;
    this.attempt = 0; // reconnect attempts since the last stable connection
    this.connects = 0; // sockets opened, in all
    this.lastRttMs = null;
    this._openedAt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._pingSentAt = null;
    this._lastRx = 0;
  }

  _setState(state, info = {}) {
    this.state = state;
    this._onState(state, info);
  }

  /** Start connecting (and keep reconnecting until disconnect()). */
  connect() {
    if (this.state === "connecting" || this.state === "open") return;
    this._clearRetry();
    this._open();
  }

  /** Close for good: no reconnect. */
  disconnect(code = 1000, reason = "client closed") {
    this._clearRetry();
    this._stopKeepalive();
    const ws = this.ws;
    this._detach();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // closing an already closed socket: nothing to do
      }
    }
    this._setState("closed", { code, reason });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === OPEN;
  }

  /** Bytes queued in the socket, not yet sent (0 when closed). */
  get bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  /** Send a JSON message; false when not open (the message is dropped). */
  sendJson(message) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Send a binary frame; false when not open. */
  sendBinary(data) {
    if (!this.isOpen) return false;
    this.ws.send(data);
    return true;
  }

  _open() {
    this._setState("connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new this._WS(this.url);
    } catch (err) {
      this._scheduleRetry({ code: 0, reason: String(err && err.message ? err.message : err) });
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this._openedAt = this._now();
      this._lastRx = this._openedAt;
      this.connects++;
      this._setState("open", { reconnect: this.connects > 1 });
      this._startKeepalive();
    };
    ws.onmessage = (ev) => {
      this._lastRx = this._now();
      const data = ev.data;
      if (typeof data === "string") {
        const event = parseServerEvent(data);
        if (event.type === "pong") this._gotPong();
        this._onEvent(event);
      } else {
        this._onAudio(data);
      }
    };
    ws.onerror = () => {
      // The close event follows and carries the code; nothing to do here.
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return; // a socket we already gave up on
      this._socketGone({ code: ev.code, reason: ev.reason || "" });
    };
  }

  _detach() {
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    }
    this.ws = null;
  }

  _socketGone(info) {
    this._stopKeepalive();
    const lived = this._openedAt ? this._now() - this._openedAt : 0;
    if (this._openedAt && lived >= this.stableMs) this.attempt = 0;
    this._openedAt = 0;
    this._detach();
    this._scheduleRetry(info);
  }

  _scheduleRetry(info) {
    const delayMs = backoffDelay(this.attempt, this.backoff, this._random);
    this.attempt++;
    this._setState("waiting", { ...info, delayMs, attempt: this.attempt });
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delayMs);
  }

  _clearRetry() {
    if (this._retryTimer !== null) {
      this._timers.clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
  }

  _startKeepalive() {
    this._stopKeepalive();
    this._pingTimer = this._timers.setInterval(() => this._ping(), this.pingIntervalMs);
  }

  _stopKeepalive() {
    if (this._pingTimer !== null) this._timers.clearInterval(this._pingTimer);
    if (this._pongTimer !== null) this._timers.clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
    this._pingSentAt = null;
  }

  _ping() {
    if (!this.sendJson(pingMessage())) return;
    const sentAt = this._now();
    this._pingSentAt = sentAt;
    if (this._pongTimer !== null) this._timers.clearTimeout(this._pongTimer);
    this._pongTimer = this._timers.setTimeout(() => {
      this._pongTimer = null;
      // Any frame since the ping proves the socket alive, not only a pong.
      if (this._lastRx > sentAt) return;
      this._keepaliveFailed();
    }, this.pongTimeoutMs);
  }

  _gotPong() {
    if (this._pingSentAt !== null) {
      this.lastRttMs = this._now() - this._pingSentAt;
      this._pingSentAt = null;
    }
  }

  _keepaliveFailed() {
    // A dead socket may take minutes to report close: give up on it now.
    const ws = this.ws;
    this._socketGone({ code: 4000, reason: "keepalive timeout" });
    if (ws) {
      try {
        ws.close(4000, "keepalive timeout");
      } catch {
        // already closing
      }
    }
  }
}
