import { test } from "node:test";
import assert from "node:assert/strict";
import { formatNumber, numericFields } from "../../static/js/lib/metrics.js";
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
