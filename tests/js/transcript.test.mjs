import { test } from "node:test";
import assert from "node:assert/strict";
import { Transcript } from "../../static/js/lib/transcript.js";

const view = (t) => t.entries.map((e) => [e.role, e.text, e.partial, e.status]);

test("partial user transcripts are replaced, then finalised", () => {
  const t = new Transcript();
  const [a] = t.apply({ type: "input.transcript", text: "xin", final: false });
  const [b] = t.apply({ type: "input.transcript", text: "xin chào", final: false });
  assert.equal(a, b, "same entry updated");
  t.apply({ type: "input.transcript", text: "Xin chào.", final: true });
  assert.deepEqual(view(t), [["user", "Xin chào.", false, null]]);
  // The next partial starts a new entry.
  t.apply({ type: "input.transcript", text: "tôi", final: false });
  assert.deepEqual(view(t)[1], ["user", "tôi", true, null]);
});

test("a final with no partial before it is its own entry; final defaults to true", () => {
  const t = new Transcript();
  t.apply({ type: "input.transcript", text: "một" });
  t.apply({ type: "input.transcript", text: "hai", final: true });
  assert.deepEqual(view(t), [
    ["user", "một", false, null],
    ["user", "hai", false, null],
  ]);
});

test("assistant text: deltas append, done replaces with the whole text", () => {
  const t = new Transcript();
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "Chào " });
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "bạn" });
  assert.deepEqual(view(t), [["assistant", "Chào bạn", true, null]]);
  t.apply({ type: "response.text.done", response_id: "r1", text: "Chào bạn!" });
  assert.deepEqual(view(t), [["assistant", "Chào bạn!", false, null]], "whole text: no longer partial");
  t.apply({ type: "response.done", response_id: "r1", status: "completed" });
  assert.deepEqual(view(t), [["assistant", "Chào bạn!", false, "completed"]]);
});

test("deltas for a response never started still show (dropped start), by id", () => {
  const t = new Transcript();
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "a" });
  t.apply({ type: "response.text.delta", response_id: "r2", delta: "x" });
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "b" });
  assert.deepEqual(
    t.entries.map((e) => [e.responseId, e.text]),
    [
      ["r1", "ab"],
      ["r2", "x"],
    ],
  );
});

test("a dropped delta is healed by text.done", () => {
  const t = new Transcript();
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "Một " });
  // "hai " was dropped by the server under backpressure
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "ba" });
  t.apply({ type: "response.text.done", response_id: "r1", text: "Một hai ba" });
  assert.equal(t.entries[0].text, "Một hai ba");
});

test("interrupted marks the response; response.done interrupted too", () => {
  const t = new Transcript();
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "response.text.delta", response_id: "r1", delta: "Dạ" });
  t.apply({ type: "interrupted", response_id: "r1" });
  assert.equal(t.entries[0].status, "interrupted");
  t.apply({ type: "response.started", response_id: "r2" });
  t.apply({ type: "response.done", response_id: "r2", status: "interrupted" });
  assert.equal(t.entries[1].status, "interrupted");
  assert.deepEqual(t.apply({ type: "interrupted", response_id: "nope" }), []);
  assert.deepEqual(t.apply({ type: "response.done", response_id: "nope" }), []);
});

test("user speech during a response keeps its own entry", () => {
  const t = new Transcript();
  t.apply({ type: "input.transcript", text: "đặt", final: false });
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "input.transcript", text: "đặt lịch", final: true });
  assert.deepEqual(
    t.entries.map((e) => [e.role, e.text]),
    [
      ["user", "đặt lịch"],
      ["assistant", ""],
    ],
  );
});

test("typed turns show at once; the server's echo of them is not repeated", () => {
  const t = new Transcript();
  t.addTypedText("Cho tôi đặt lịch");
  t.apply({ type: "input.transcript", text: "Cho tôi đặt lịch ", final: true });
  assert.equal(t.entries.length, 1);
  // A different transcript is shown.
  t.addTypedText("một");
  t.apply({ type: "input.transcript", text: "hai", final: true });
  assert.deepEqual(
    t.entries.map((e) => e.text),
    ["Cho tôi đặt lịch", "một", "hai"],
  );
  // Once something else happened, the same text again is a new turn.
  t.addTypedText("ba");
  t.apply({ type: "response.started", response_id: "r" });
  t.apply({ type: "input.transcript", text: "ba", final: true });
  assert.equal(t.entries.length, 6);
});

test("errors are entries with code, message and fatal flag", () => {
  const t = new Transcript();
  const [e] = t.apply({ type: "error", code: "bad_frame", message: "odd byte count", fatal: false });
  assert.deepEqual([e.role, e.code, e.text, e.fatal], ["error", "bad_frame", "odd byte count", false]);
  const [f] = t.apply({ type: "error", message: "x", fatal: true });
  assert.equal(f.code, "error");
  assert.equal(f.fatal, true);
});

test("unrelated events change nothing", () => {
  const t = new Transcript();
  for (const type of ["pong", "metrics", "session.ready", "input.speech_started", "whatever"]) {
    assert.deepEqual(t.apply({ type }), []);
  }
  assert.equal(t.entries.length, 0);
});

test("bounded: oldest entries go first, bookkeeping follows", () => {
  const t = new Transcript({ maxEntries: 3 });
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "input.transcript", text: "p", final: false });
  t.addNotice("n1");
  t.addNotice("n2");
  assert.equal(t.entries.length, 3);
  assert.deepEqual(t.apply({ type: "response.done", response_id: "r1" }), [], "r1 was evicted");
  t.addNotice("n3");
  // The evicted partial no longer receives text: a new entry is made.
  t.apply({ type: "input.transcript", text: "q", final: true });
  assert.deepEqual(
    t.entries.map((e) => e.text),
    ["n2", "n3", "q"],
  );
  const ids = t.entries.map((e) => e.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids increase");
});

test("closeOpen: a dropped socket closes what was streaming, as it stands", () => {
  const t = new Transcript();
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "response.text.done", response_id: "r1", text: "xong" });
  t.apply({ type: "response.done", response_id: "r1", status: "completed" });
  t.apply({ type: "input.transcript", text: "đặt", final: false });
  t.apply({ type: "response.started", response_id: "r2" });
  t.apply({ type: "response.text.delta", response_id: "r2", delta: "Dạ" });
  const changed = t.closeOpen();
  assert.deepEqual(
    changed.map((e) => [e.role, e.text, e.partial, e.status]),
    [
      ["user", "đặt", false, null],
      ["assistant", "Dạ", false, "cut"],
    ],
  );
  assert.equal(t.entries[0].status, "completed", "finished responses untouched");
  // After reconnect a reused response id starts a new entry; transcripts too.
  t.apply({ type: "response.text.delta", response_id: "r2", delta: "Mới" });
  t.apply({ type: "input.transcript", text: "mới", final: false });
  assert.equal(t.entries.length, 5);
  assert.deepEqual(t.closeOpen().map((e) => e.text), ["Mới", "mới"]);
  assert.deepEqual(t.closeOpen(), []);
});

test("clear empties everything", () => {
  const t = new Transcript();
  t.apply({ type: "input.transcript", text: "a", final: false });
  t.clear();
  assert.equal(t.entries.length, 0);
  t.apply({ type: "input.transcript", text: "b", final: true });
  assert.equal(t.entries.length, 1);
});

test("a joined final transcript replaces the turn's first one, not a new entry", () => {
  const t = new Transcript();
  t.apply({ type: "input.transcript", text: "Xin chào.", final: true });
  t.apply({ type: "response.started", response_id: "r1" });
  t.apply({ type: "interrupted", response_id: "r1" });
  t.apply({ type: "input.transcript", text: "Tôi muốn", final: false });
  const changed = t.apply({
    type: "input.transcript",
    text: "Xin chào. Tôi muốn đặt lịch hẹn.",
    final: true,
    joined: true,
  });
  const users = t.entries.filter((e) => e.role === "user");
  assert.deepEqual(users.map((e) => e.text), ["Xin chào. Tôi muốn đặt lịch hẹn."]);
  assert.equal(changed.length, 2);
  assert.equal(changed[1].hidden, true);
  // The next turn is an entry of its own again.
  t.apply({ type: "input.transcript", text: "Cảm ơn.", final: true });
  assert.equal(t.entries.filter((e) => e.role === "user").length, 2);
});
