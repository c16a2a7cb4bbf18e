import { test } from "node:test";
import assert from "node:assert/strict";
import { STAGES, formatFigure, formatMs, formatNumber, numericFields, stageRows } from "../../static/js/lib/metrics.js";
import { DEFAULT_LANG, DICT, LANGS, otherLang, translator } from "../../static/js/i18n.js";

test("numericFields: numbers only, sorted, type left out, one level flattened", () => {
  const rows = numericFields({
    type: "metrics",
    outbox_depth: 3,
    dropped: 0,
    ttfa_ms: 412.5,
    brain: "local",
    ok: true,
    missing: null,
    nan: NaN,
    latency: { p50: 10, p99: 42, deeper: { x: 1 } },
    list: [1, 2],
  });
  assert.deepEqual(rows, [
    ["dropped", 0],
    ["latency.p50", 10],
    ["latency.p99", 42],
    ["outbox_depth", 3],
    ["ttfa_ms", 412.5],
  ]);
  assert.deepEqual(numericFields(null), []);
  assert.deepEqual(numericFields({ type: "metrics" }), []);
});

test("formatNumber", () => {
  assert.equal(formatNumber(42), "42");
  assert.equal(formatNumber(412.53), "413");
  assert.equal(formatNumber(12.345), "12.3");
  assert.equal(formatNumber(0.01234), "0.0123");
  assert.equal(formatNumber(Infinity), "Infinity");
});

test("stageRows: the five stages in order, in ms, a missing or odd one null", () => {
  assert.deepEqual(STAGES, ["end_of_turn", "asr", "brain", "tts", "total"]);
  const rows = stageRows({ end_of_turn: 212.5, asr: 301, brain: null, tts: 95.25, total: 790, extra: 3 });
  assert.deepEqual(rows, [
    ["stage.end_of_turn", 212.5],
    ["stage.asr", 301],
    ["stage.brain", null],
    ["stage.tts", 95.25],
    ["stage.total", 790],
  ]);
  assert.deepEqual(rows.map(([, v]) => formatMs(v)), ["213", "301", "–", "95", "790"]);
  assert.equal(formatMs(0.1), "0");
  assert.equal(formatMs(undefined), "–");
  // A stage the server left out, or not a number: not known either.
  assert.deepEqual(stageRows({ total: 640, asr: "301", tts: NaN }).map(([, v]) => v), [null, null, null, null, 640]);
  // No timings (a greeting, a typed turn): nothing to show, the panel keeps the last.
  for (const none of [undefined, null, 42, "x", [1, 2]]) assert.equal(stageRows(none), null, String(none));
  assert.equal(formatFigure(undefined), "–");
  assert.equal(formatFigure(0), "0");
});

test("every stage and figure the panel shows has a label in both languages", () => {
  for (const lang of LANGS) {
    const t = translator(lang);
    for (const [key] of stageRows({})) assert.notEqual(t(key), key, `${lang}: ${key}`);
    for (const key of ["stageFigures", "noStages", "m.gain"]) assert.notEqual(t(key), key, `${lang}: ${key}`);
  }
  assert.equal(translator("vi")("stage.total"), "Tổng: từ lúc ngừng nói tới âm thanh đầu");
  assert.equal(translator("en")("stage.total"), "Total: end of speech to first audio");
});

test("both languages have the same keys, none empty", () => {
  assert.deepEqual(LANGS.sort(), ["en", "vi"]);
  const vi = Object.keys(DICT.vi).sort();
  const en = Object.keys(DICT.en).sort();
  assert.deepEqual(en, vi);
  for (const lang of LANGS) {
    for (const [k, v] of Object.entries(DICT[lang])) assert.ok(v.trim().length > 0, `${lang}.${k}`);
  }
});

test("placeholders match between languages", () => {
  const names = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
  for (const key of Object.keys(DICT.vi)) {
    assert.deepEqual(names(DICT.en[key]), names(DICT.vi[key]), key);
  }
});

test("translator: Vietnamese by default, fills parameters, falls back", () => {
  assert.equal(DEFAULT_LANG, "vi");
  const vi = translator("vi");
  const en = translator("en");
  assert.equal(vi("connect"), "Kết nối");
  assert.equal(en("connect"), "Connect");
  assert.equal(translator("fr")("connect"), "Kết nối");
  assert.equal(en("no.such.key"), "no.such.key");
  assert.equal(
    en("msg.serverError", { code: "bad_frame", message: "odd" }),
    "Server error bad_frame: odd",
  );
  assert.equal(en("msg.serverError", { code: "x" }), "Server error x: {message}");
  assert.equal(otherLang("vi"), "en");
  assert.equal(otherLang("en"), "vi");
});
