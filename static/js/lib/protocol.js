// The room's wire protocol, client side (DESIGN.md section 2). Pure module.
//
// Builders return plain objects with exactly the fields the server accepts
// (it rejects unknown fields), so nothing else ever reaches the socket.

export const INPUT_SAMPLE_RATE = 24000; // what the page always sends
export const OUTPUT_SAMPLE_RATE = 24000; // server default for assistant audio
export const FRAME_MS = 100;

/** Binary frames are the preferred audio path; this is the JSON one. */
export function audioMessage(int16Values) {
  const audio = Array.from(int16Values, (v) => {
    if (!Number.isInteger(v) || v < -32768 || v > 32767) {
      throw new RangeError(`not an int16 sample: ${v}`);
    }
    return v;
  });
  return { type: "audio", audio };
}

export function textMessage(text) {
  if (typeof text !== "string") throw new TypeError("text must be a string");
  return { type: "text", text };
}

export function commitAudioMessage() {
  return { type: "commit_audio" };
}

/**
 * Barge-in. played_ms (how much of the current response the user heard) is
 * sent as a non-negative integer, or left out when unknown.
 * @param {number|null|undefined} playedMs
 */
export function interruptMessage(playedMs) {
  if (playedMs === null || playedMs === undefined || !Number.isFinite(playedMs)) {
    return { type: "interrupt" };
  }
  return { type: "interrupt", played_ms: Math.max(0, Math.round(playedMs)) };
}

/**
 * The client VAD heard speech: a hint. played_ms (what the user had heard of
 * the current response) is what a barge-in the server confirms will cut at.
 * @param {number|null|undefined} playedMs
 */
export function clientVadSpeechStartMessage(playedMs) {
  if (playedMs === null || playedMs === undefined || !Number.isFinite(playedMs)) {
    return { type: "client_vad_speech_start" };
  }
  return { type: "client_vad_speech_start", played_ms: Math.max(0, Math.round(playedMs)) };
}

const CONFIG_FIELDS = ["input_sample_rate", "language", "voice", "instructions"];

/** session.config with only the given (known, defined) fields. */
export function sessionConfigMessage(fields) {
  const msg = { type: "session.config" };
  for (const [key, value] of Object.entries(fields)) {
    if (!CONFIG_FIELDS.includes(key)) throw new RangeError(`unknown session.config field ${key}`);
    if (value === undefined) continue;
    if (key === "input_sample_rate" && (!Number.isInteger(value) || value <= 0)) {
      throw new RangeError(`input_sample_rate must be a positive integer, got ${value}`);
    }
    msg[key] = value;
  }
  return msg;
}

export function pingMessage() {
  return { type: "ping" };
}

/**
 * Decode a server text frame. Returns the event object, or an
 * {type: "client.bad_event", raw, reason} marker for a frame that is not a
 * JSON object with a string `type` (shown, never thrown).
 * @param {string} text
 */
export function parseServerEvent(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { type: "client.bad_event", raw: String(text).slice(0, 200), reason: "invalid JSON" };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { type: "client.bad_event", raw: String(text).slice(0, 200), reason: "not an object" };
  }
  if (typeof value.type !== "string") {
    return { type: "client.bad_event", raw: String(text).slice(0, 200), reason: "no type" };
  }
  return value;
}

/**
 * The session.config the page should send after session.ready, or null.
 * The page always sends INPUT_SAMPLE_RATE; it tells the room when the room
 * expects another rate.
 */
export function configForReady(ready, sendRate = INPUT_SAMPLE_RATE) {
  const roomRate = ready && ready.input_sample_rate;
  if (Number.isInteger(roomRate) && roomRate !== sendRate) {
    return sessionConfigMessage({ input_sample_rate: sendRate });
  }
  return null;
}

/** Random session id: 16 lowercase hex characters (URL-path safe). */
export function newSessionId(randomBytes) {
  const bytes = new Uint8Array(8);
  if (randomBytes) randomBytes(bytes);
  else globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A session id given by a user (URL ?session=): letters, digits, - and _. */
export function isValidSessionId(id) {
  return typeof id === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(id);
}

/** ws(s)://host/ws/{id} for a page at `location`-like {protocol, host}. */
export function socketUrl({ protocol, host }, sessionId, token = null) {
  const scheme = protocol === "https:" ? "wss:" : "ws:";
  return withToken(`${scheme}//${host}/ws/${encodeURIComponent(sessionId)}`, token);
}

// A room token (when the server has AUTH_SECRET) goes in the query: browsers
// cannot set headers on a WebSocket.
export function withToken(url, token) {
  return token ? `${url}?token=${encodeURIComponent(token)}` : url;
}
