import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FRAME_MS,
  INPUT_SAMPLE_RATE,
  audioMessage,
  clientVadSpeechStartMessage,
  commitAudioMessage,
  configForReady,
  interruptMessage,
  isValidSessionId,
  newSessionId,
  parseServerEvent,
  pingMessage,
  sessionConfigMessage,
  socketUrl,
  textMessage,
} from "../../static/js/lib/protocol.js";

// The wire form: what JSON.stringify puts on the socket.
const wire = (m) => JSON.stringify(m);

test("client messages carry exactly the DESIGN.md fields", () => {
  assert.equal(wire(textMessage("Xin chào")), '{"type":"text","text":"Xin chào"}');
  assert.equal(wire(commitAudioMessage()), '{"type":"commit_audio"}');
  assert.equal(wire(clientVadSpeechStartMessage()), '{"type":"client_vad_speech_start"}');
  assert.equal(
    wire(clientVadSpeechStartMessage(1234.6)),
    '{"type":"client_vad_speech_start","played_ms":1235}',
  );
  assert.equal(wire(pingMessage()), '{"type":"ping"}');
  assert.equal(wire(audioMessage(new Int16Array([1, -2, 32767, -32768]))), '{"type":"audio","audio":[1,-2,32767,-32768]}');
});

test("interrupt: played_ms is a non-negative integer or absent", () => {
  assert.equal(wire(interruptMessage(1234.6)), '{"type":"interrupt","played_ms":1235}');
  assert.equal(wire(interruptMessage(0)), '{"type":"interrupt","played_ms":0}');
  assert.equal(wire(interruptMessage(-5)), '{"type":"interrupt","played_ms":0}');
  assert.equal(wire(interruptMessage(null)), '{"type":"interrupt"}');
  assert.equal(wire(interruptMessage(undefined)), '{"type":"interrupt"}');
  assert.equal(wire(interruptMessage(NaN)), '{"type":"interrupt"}');
  assert.equal(wire(interruptMessage(Infinity)), '{"type":"interrupt"}');
});

test("audio message rejects values that are not int16", () => {
  assert.throws(() => audioMessage([40000]), RangeError);
  assert.throws(() => audioMessage([0.5]), RangeError);
  assert.deepEqual(audioMessage([]), { type: "audio", audio: [] });
});

test("text must be a string", () => {
  assert.throws(() => textMessage(42), TypeError);
});

test("session.config: only known fields, undefined left out", () => {
  assert.equal(
    wire(sessionConfigMessage({ input_sample_rate: 24000, language: undefined })),
    '{"type":"session.config","input_sample_rate":24000}',
  );
  assert.throws(() => sessionConfigMessage({ sample_rate: 24000 }), RangeError);
  assert.throws(() => sessionConfigMessage({ input_sample_rate: 0 }), RangeError);
  assert.throws(() => sessionConfigMessage({ input_sample_rate: "24000" }), RangeError);
});

test("the page sends 24 kHz in 100 ms frames", () => {
  assert.equal(INPUT_SAMPLE_RATE, 24000);
  assert.equal(FRAME_MS, 100);
});

test("configForReady: config only when the room expects another rate", () => {
  assert.equal(configForReady({ type: "session.ready", input_sample_rate: 24000 }), null);
  assert.equal(configForReady({ type: "session.ready" }), null);
  assert.deepEqual(configForReady({ type: "session.ready", input_sample_rate: 16000 }), {
    type: "session.config",
    input_sample_rate: 24000,
  });
});

test("parseServerEvent: objects with a type pass; anything else is marked", () => {
  assert.deepEqual(parseServerEvent('{"type":"pong"}'), { type: "pong" });
  assert.deepEqual(parseServerEvent('{"type":"input.transcript","text":"a","final":false}'), {
    type: "input.transcript",
    text: "a",
    final: false,
  });
  for (const [raw, reason] of [
    ["not json", "invalid JSON"],
    ["[1,2]", "not an object"],
    ["null", "not an object"],
    ['"x"', "not an object"],
    ['{"kind":"x"}', "no type"],
    ['{"type":5}', "no type"],
  ]) {
    const ev = parseServerEvent(raw);
    assert.equal(ev.type, "client.bad_event", raw);
    assert.equal(ev.reason, reason, raw);
  }
  assert.equal(parseServerEvent("x".repeat(1000)).raw.length, 200);
});

test("session ids: 16 hex chars, random, path-safe", () => {
  const id = newSessionId();
  assert.match(id, /^[0-9a-f]{16}$/);
  assert.notEqual(newSessionId(), id);
  assert.equal(newSessionId((b) => b.fill(0xab)), "abababababababab");
  assert.ok(isValidSessionId(id));
  assert.ok(isValidSessionId("demo_room-1"));
  assert.ok(!isValidSessionId(""));
  assert.ok(!isValidSessionId("a/b"));
  assert.ok(!isValidSessionId("x".repeat(65)));
  assert.ok(!isValidSessionId(undefined));
});

test("socket URL follows the page's scheme and host", () => {
  assert.equal(socketUrl({ protocol: "http:", host: "localhost:8000" }, "abc"), "ws://localhost:8000/ws/abc");
  assert.equal(socketUrl({ protocol: "https:", host: "voice.example" }, "abc"), "wss://voice.example/ws/abc");
  assert.equal(
    socketUrl({ protocol: "https:", host: "voice.example" }, "abc", "a.b+c/d"),
    "wss://voice.example/ws/abc?token=a.b%2Bc%2Fd",
  );
});
