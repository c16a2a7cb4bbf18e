import { test } from "node:test";
import assert from "node:assert/strict";
import { BACKOFF_DEFAULTS, VoiceSocket, backoffDelay } from "../../static/js/lib/connection.js";

// A manual clock with setTimeout/setInterval.
class FakeClock {
  constructor() {
    this.now = 0;
    this._next = 1;
    this._timers = new Map();
  }
  setTimeout(fn, ms) {
    const id = this._next++;
    this._timers.set(id, { fn, at: this.now + ms, every: null });
    return id;
  }
  setInterval(fn, ms) {
    const id = this._next++;
    this._timers.set(id, { fn, at: this.now + ms, every: ms });
    return id;
  }
  clearTimeout(id) {
    this._timers.delete(id);
  }
  clearInterval(id) {
    this._timers.delete(id);
  }
  get pending() {
    return this._timers.size;
  }
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let best = null;
      for (const [id, t] of this._timers) if (t.at <= end && (!best || t.at < best[1].at)) best = [id, t];
      if (!best) break;
      const [id, t] = best;
      this.now = t.at;
      if (t.every) t.at += t.every;
      else this._timers.delete(id);
      t.fn();
    }
    this.now = end;
  }
}

// A WebSocket stand-in that records what is sent and lets the test drive events.
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = null;
      this.bufferedAmount = 0;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(data);
    }
    close(code, reason) {
      this.closed = { code, reason };
      this.readyState = 3;
    }
    // test helpers
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(data) {
      this.onmessage?.({ data });
    }
    serverClose(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeWebSocket, sockets };
}

function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const states = [];
  const events = [];
  const audio = [];
  const vs = new VoiceSocket({
    url: "ws://h/ws/abc",
    WebSocketImpl: FakeWebSocket,
    timers: clock,
    now: () => clock.now,
    random: () => 1, // no jitter: delay = full step
    onState: (s, info) => states.push([s, info]),
    onEvent: (e) => events.push(e),
    onAudio: (d) => audio.push(d),
    ...options,
  });
  return { clock, sockets, states, events, audio, vs };
}

test("backoff: exponential, capped, with equal jitter", () => {
  const b = { baseMs: 500, maxMs: 15000, factor: 2 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 10].map((a) => backoffDelay(a, b, () => 1)),
    [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000],
  );
  assert.deepEqual(
    [0, 1, 5].map((a) => backoffDelay(a, b, () => 0)),
    [250, 500, 7500],
  );
  assert.equal(backoffDelay(-3, b, () => 1), 500);
  assert.equal(backoffDelay(0, undefined, () => 1), BACKOFF_DEFAULTS.baseMs);
});

test("requires a WebSocket class", () => {
  assert.throws(() => new VoiceSocket({ url: "ws://x" }), TypeError);
});

test("connects, passes JSON events and binary audio through", () => {
  const { vs, sockets, states, events, audio } = setup();
  vs.connect();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, "ws://h/ws/abc");
  assert.equal(sockets[0].binaryType, "arraybuffer");
  assert.equal(vs.sendJson({ type: "ping" }), false, "not open yet: dropped");
  sockets[0].serverOpen();
  assert.deepEqual(
    states.map((s) => s[0]),
    ["connecting", "open"],
  );
  sockets[0].serverSend('{"type":"session.ready","session_id":"abc"}');
  const buf = new ArrayBuffer(4);
  sockets[0].serverSend(buf);
  sockets[0].serverSend("garbage");
  assert.equal(events[0].type, "session.ready");
  assert.equal(events[1].type, "client.bad_event");
  assert.deepEqual(audio, [buf]);
  assert.equal(vs.sendJson({ type: "text", text: "chào" }), true);
  assert.equal(vs.sendBinary(buf), true);
  assert.deepEqual(sockets[0].sent, ['{"type":"text","text":"chào"}', buf]);
});

test("connect twice does not open a second socket", () => {
  const { vs, sockets } = setup();
  vs.connect();
  vs.connect();
  sockets[0].serverOpen();
  vs.connect();
  assert.equal(sockets.length, 1);
});

test("reconnects to the same URL with growing delays", () => {
  const { vs, sockets, states, clock } = setup();
  vs.connect();
  sockets[0].serverClose(1006);
  assert.deepEqual(states.at(-1), ["waiting", { code: 1006, reason: "", delayMs: 500, attempt: 1 }]);
  clock.advance(499);
  assert.equal(sockets.length, 1);
  clock.advance(1);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url, "ws://h/ws/abc");
  sockets[1].serverClose(1006);
  assert.equal(states.at(-1)[1].delayMs, 1000);
  clock.advance(1000);
  sockets[2].serverOpen();
  sockets[2].serverClose(1013, "slow consumer");
  assert.deepEqual(states.at(-1), ["waiting", { code: 1013, reason: "slow consumer", delayMs: 2000, attempt: 3 }]);
});

test("a connection that stayed up resets the backoff", () => {
  const { vs, sockets, states, clock } = setup({ stableMs: 10000 });
  vs.connect();
  sockets[0].serverClose();
  clock.advance(500);
  sockets[1].serverClose();
  clock.advance(1000);
  sockets[2].serverOpen();
  clock.advance(10000);
  sockets[2].serverClose();
  assert.equal(states.at(-1)[1].delayMs, 500);
  assert.equal(states.at(-1)[1].attempt, 1);
});

test("a connection that drops at once does not reset the backoff", () => {
  const { vs, sockets, states, clock } = setup({ stableMs: 10000 });
  vs.connect();
  sockets[0].serverOpen();
  sockets[0].serverClose();
  clock.advance(500);
  sockets[1].serverOpen();
  clock.advance(100);
  sockets[1].serverClose();
  assert.equal(states.at(-1)[1].delayMs, 1000);
});

test("a constructor that throws is retried like a failed connect", () => {
  let n = 0;
  class Throwing {
    constructor() {
      n++;
      throw new Error("bad url");
    }
  }
  const { vs, states, clock } = setup({ WebSocketImpl: Throwing });
  vs.connect();
  assert.equal(states.at(-1)[0], "waiting");
  assert.equal(states.at(-1)[1].reason, "bad url");
  clock.advance(500);
  assert.equal(n, 2);
});

test("disconnect stops for good and cancels a pending retry", () => {
  const { vs, sockets, states, clock } = setup();
  vs.connect();
  sockets[0].serverOpen();
  vs.disconnect();
  assert.deepEqual(sockets[0].closed, { code: 1000, reason: "client closed" });
  assert.equal(states.at(-1)[0], "closed");
  assert.equal(clock.pending, 0, "no keepalive or retry timers left");
  // The late close event of the old socket is ignored.
  sockets[0].serverClose(1000);
  clock.advance(60000);
  assert.equal(sockets.length, 1);

  vs.connect();
  sockets[1].serverClose();
  vs.disconnect();
  clock.advance(60000);
  assert.equal(sockets.length, 2);
  assert.equal(vs.state, "closed");
});

test("ping every 20 s; pong gives the round trip", () => {
  const { vs, sockets, clock } = setup();
  vs.connect();
  sockets[0].serverOpen();
  clock.advance(19999);
  assert.deepEqual(sockets[0].sent, []);
  clock.advance(1);
  assert.deepEqual(sockets[0].sent, ['{"type":"ping"}']);
  clock.advance(35);
  sockets[0].serverSend('{"type":"pong"}');
  assert.equal(vs.lastRttMs, 35);
  clock.advance(20000);
  assert.equal(sockets[0].sent.length, 2);
  assert.equal(vs.state, "open");
});

test("no answer to a ping: the socket is dropped and a new one opened", () => {
  const { vs, sockets, states, clock } = setup({ pongTimeoutMs: 10000 });
  vs.connect();
  sockets[0].serverOpen();
  clock.advance(20000 + 9999);
  assert.equal(vs.state, "open");
  clock.advance(1);
  assert.deepEqual(sockets[0].closed, { code: 4000, reason: "keepalive timeout" });
  assert.equal(states.at(-1)[0], "waiting");
  assert.equal(states.at(-1)[1].code, 4000);
  clock.advance(500);
  assert.equal(sockets.length, 2);
  // Events from the abandoned socket are ignored.
  sockets[0].serverClose(1006);
  assert.equal(states.at(-1)[0], "connecting");
});

test("any frame after the ping counts as alive, not only pong", () => {
  const { vs, sockets, clock } = setup();
  vs.connect();
  sockets[0].serverOpen();
  clock.advance(20000);
  clock.advance(100);
  sockets[0].serverSend('{"type":"metrics","outbox_depth":1}');
  clock.advance(20000);
  assert.equal(vs.state, "open");
  assert.equal(sockets[0].closed, null);
});

test("bufferedAmount and isOpen reflect the socket", () => {
  const { vs, sockets } = setup();
  assert.equal(vs.bufferedAmount, 0);
  assert.equal(vs.isOpen, false);
  vs.connect();
  sockets[0].serverOpen();
  sockets[0].bufferedAmount = 9600;
  assert.equal(vs.bufferedAmount, 9600);
  assert.equal(vs.isOpen, true);
});

test("open reports whether it is a reconnect", () => {
  const { vs, sockets, states, clock } = setup();
  vs.connect();
  sockets[0].serverOpen();
  assert.equal(states.at(-1)[1].reconnect, false);
  sockets[0].serverClose();
  clock.advance(500);
  sockets[1].serverOpen();
  assert.equal(states.at(-1)[1].reconnect, true);
});
