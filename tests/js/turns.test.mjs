import { test } from "node:test";
import assert from "node:assert/strict";
import { TurnController, TurnTimer, estimatePlayedMs } from "../../static/js/lib/turns.js";

function controller(options = {}) {
  const sent = [];
  let played = 0;
  const c = new TurnController({
    send: (m) => sent.push(JSON.stringify(m)),
    playedMs: () => played,
    ...options,
  });
  return { c, sent, setPlayed: (ms) => (played = ms) };
}

test("speech start while the agent is silent: client_vad_speech_start only", () => {
  const { c, sent } = controller();
  assert.equal(c.agentSpeaking, false);
  const r = c.onSpeechStart();
  assert.deepEqual(sent, ['{"type":"client_vad_speech_start"}']);
  assert.equal(r.clearPlayback, false);
  assert.equal(c.acceptAudio(), true);
});

test("speech start while the agent speaks: a hint and a duck, never a stop", () => {
  const { c, sent, setPlayed } = controller();
  c.onResponseStarted("r1");
  assert.equal(c.agentSpeaking, true);
  setPlayed(1234.4);
  const r = c.onSpeechStart();
  // The server decides whether it is a barge-in (a cough or a "dạ" is not); one it
  // confirms cuts at what the user had heard when the hint went.
  assert.deepEqual(sent, ['{"type":"client_vad_speech_start","played_ms":1234}']);
  assert.equal(r.clearPlayback, false);
  assert.equal(c.ducked, true);
  assert.equal(c.acceptAudio(), true, "the agent's audio goes on playing, ducked");
  assert.equal(c.interruptsSent, 0);
  assert.equal(c.agentSpeaking, true);
  c.onSpeechStop();
  assert.equal(c.ducked, false, "restored when the user stops");
  // The buffered tail of a done response: the same.
  c.onResponseDone("r1");
  c.onPlayerActive(true);
  c.onSpeechStart();
  assert.deepEqual(sent.slice(1), ['{"type":"client_vad_speech_start","played_ms":1234}']);
  assert.equal(c.acceptAudio(), true);
});

test("ducked while either VAD hears the user", () => {
  const { c } = controller();
  assert.equal(c.ducked, false);
  c.onServerSpeech(true); // input.speech_started
  assert.equal(c.ducked, true);
  c.onSpeechStart(); // the page's VAD too
  c.onServerSpeech(false); // input.speech_stopped: the page still hears speech
  assert.equal(c.ducked, true);
  c.onSpeechStop();
  assert.equal(c.ducked, false);
  c.onServerSpeech(true);
  c.onInterrupted("r1"); // the server cut the agent: the user goes on talking
  assert.equal(c.ducked, true);
  c.onServerSpeech(false);
  assert.equal(c.ducked, false);
});

test("Interrupt button: one interrupt with played_ms, playback cleared", () => {
  const { c, sent, setPlayed } = controller();
  c.onResponseStarted("r1");
  setPlayed(1234.4);
  const r = c.interrupt();
  assert.deepEqual(sent, ['{"type":"interrupt","played_ms":1234}']);
  assert.equal(r.clearPlayback, true);
  assert.equal(c.interruptsSent, 1);
});

test("played_ms left out when unknown", () => {
  const { c, sent } = controller({ playedMs: () => null });
  c.onResponseStarted("r1");
  c.interrupt();
  assert.deepEqual(sent, ['{"type":"interrupt"}']);
});

test("after the button, audio of the cut response is dropped until the server catches up", () => {
  const { c } = controller();
  c.onResponseStarted("r1");
  c.interrupt();
  assert.equal(c.acceptAudio(), false);
  c.onInterrupted("r1");
  assert.equal(c.acceptAudio(), true);
  assert.equal(c.agentSpeaking, false);

  c.onResponseStarted("r2");
  c.interrupt();
  assert.equal(c.acceptAudio(), false);
  c.onResponseStarted("r3"); // a new response: play it
  assert.equal(c.acceptAudio(), true);

  c.interrupt();
  c.onResponseDone("r3");
  assert.equal(c.acceptAudio(), true);
});

test("speech stop sends commit_audio only when the client commits turns", () => {
  const off = controller();
  off.c.onSpeechStart();
  assert.deepEqual(off.c.onSpeechStop(), { sent: null });
  assert.deepEqual(off.sent, ['{"type":"client_vad_speech_start"}']);

  const on = controller({ clientCommits: true });
  on.c.onSpeechStart();
  on.c.onSpeechStop();
  assert.deepEqual(on.sent, ['{"type":"client_vad_speech_start"}', '{"type":"commit_audio"}']);
  // A stop without a start (e.g. after reset) commits nothing.
  on.c.onSpeechStop();
  assert.equal(on.sent.length, 2);
  // Option can change at run time.
  on.c.clientCommits = false;
  on.c.onSpeechStart();
  on.c.onSpeechStop();
  assert.deepEqual(on.sent.slice(2), ['{"type":"client_vad_speech_start"}']);
});

test("speech over the agent, then its end: the hint, then commit", () => {
  const { c, sent } = controller({ clientCommits: true });
  c.onResponseStarted("r1");
  c.onSpeechStart();
  c.onSpeechStop();
  assert.deepEqual(sent, [
    '{"type":"client_vad_speech_start","played_ms":0}',
    '{"type":"commit_audio"}',
  ]);
});

test("response bookkeeping: done for another id does not end the current one", () => {
  const { c } = controller();
  c.onResponseStarted("r2");
  c.onResponseDone("r1");
  assert.equal(c.agentSpeaking, true);
  c.onResponseDone("r2");
  assert.equal(c.agentSpeaking, false);
  c.onResponseStarted(undefined);
  c.onResponseDone("whatever");
  assert.equal(c.agentSpeaking, false, "an id-less response ends on any done");
});

test("TurnTimer: first end mark to first audio", () => {
  const t = new TurnTimer();
  assert.equal(t.onAudio(100), null, "audio with no turn end (a greeting)");
  t.markTurnEnd(1000);
  t.markTurnEnd(1200); // e.g. speech_stopped after commit: ignored
  assert.equal(t.pending, true);
  assert.equal(t.onAudio(1750), 750);
  assert.equal(t.onAudio(1800), null, "only the first frame counts");
  t.markTurnEnd(2000);
  t.cancel(); // user spoke again
  assert.equal(t.onAudio(2100), null);
  t.markTurnEnd(3000);
  assert.equal(t.onAudio(3250), 250);
  assert.equal(t.last, 250);
  assert.equal(t.count, 2);
  assert.equal(t.mean, 500);
});

test("TurnTimer: a client turn end replaces a mark that never got audio", () => {
  const t = new TurnTimer();
  t.markTurnEnd(1000, { restart: true }); // commit_audio, no answer came
  t.markTurnEnd(5000, { restart: true }); // typed turn
  t.markTurnEnd(5100); // server speech_stopped: same turn, ignored
  assert.equal(t.onAudio(5400), 400);
});

test("TurnTimer: a text-only answer ends the measurement", () => {
  const t = new TurnTimer();
  t.markTurnEnd(1000, { restart: true });
  t.onResponseStarted();
  t.onResponseDone(); // answered with text, no audio
  assert.equal(t.onAudio(2200), null, "later audio (another response) does not count");
  assert.equal(t.count, 0);
});

test("TurnTimer: an older response ending after the mark does not void it", () => {
  const t = new TurnTimer();
  t.onResponseStarted(); // before any mark: ignored
  t.markTurnEnd(1000, { restart: true });
  t.onResponseDone(); // the previous response finishing
  t.onResponseStarted();
  assert.equal(t.onAudio(1300), 300);
  t.onResponseDone();
  assert.equal(t.last, 300);
});

test("TurnTimer: no negative figures; mean null before any", () => {
  const t = new TurnTimer();
  assert.equal(t.mean, null);
  t.markTurnEnd(10);
  assert.equal(t.onAudio(5), 0);
});

test("estimatePlayedMs extrapolates while playing, capped by the buffer", () => {
  const base = { playedMs: 1000, bufferedMs: 500, reportedAt: 10.0 };
  assert.equal(estimatePlayedMs({ ...base, playing: true, now: 10.05 }), 1050);
  assert.equal(estimatePlayedMs({ ...base, playing: true, now: 20 }), 1500);
  assert.equal(estimatePlayedMs({ ...base, playing: false, now: 10.05 }), 1000);
  assert.equal(estimatePlayedMs({ ...base, playing: true, now: 9 }), 1000, "clock behind report");
  assert.equal(estimatePlayedMs({ ...base, playing: true, now: 10.05, latencyMs: 30 }), 1020);
  assert.equal(estimatePlayedMs({ playedMs: 10, playing: false, latencyMs: 30 }), 0);
  assert.equal(estimatePlayedMs({ playedMs: 10.6, playing: false }), 11);
});
