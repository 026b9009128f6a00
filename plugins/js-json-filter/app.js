// `js-json-filter`: keeps the JSON messages whose field satisfies a predicate
// and drops the rest. A JavaScript port of plugins/json-filter (same config,
// same errors), built with componentize-js against the `plugin` world.
//
//   [stages.config]
//   field = "amount"   # dotted path into the message's JSON value
//   gte = 100          # exactly one of: equals, not_equals, in, exists, gt, gte, lt, lte, contains
//
// A message whose value is not JSON, or whose field has the wrong type for an
// ordering predicate (`gt` on a string), is `invalid` and goes to the
// dead-letter sink. A missing field fails every predicate but `exists = false`
// and `not_equals`.
//
// Known difference from the Rust stage: JavaScript numbers do not keep the
// integer/float distinction, so `equals = 100` also matches `100.0` (serde_json
// treats those as different), and integers beyond 2^53 lose precision.
//
// WIT mapping (componentize-js 0.23): `init` (result<_, string>) refuses its
// config by throwing a string. `process` returns the `outcome` type alias,
// for which the generated bindings do NOT catch exceptions: it must return
// `{ tag: 'ok', val: [messages] }` or `{ tag: 'err', val: { tag: 'invalid' |
// 'transient', val: reason } }` explicitly (a throw is a trap). `list<u8>` is
// a Uint8Array; `option<T>` is T or undefined; s64 is a BigInt.

import { log } from 'sluice:pipeline/log@0.1.0';

const KEYS = ['field', 'equals', 'not_equals', 'in', 'exists', 'gt', 'gte', 'lt', 'lte', 'contains'];
const PREDICATES = KEYS.slice(1);
const COMPARES = {
  gt: (n, b) => n > b,
  gte: (n, b) => n >= b,
  lt: (n, b) => n < b,
  lte: (n, b) => n <= b,
};

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The JSON type name of `v`, for error messages (as sluice_sdk::json::kind). */
function kind(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'boolean': return 'boolean';
    case 'number': return 'number';
    case 'string': return 'string';
    default: return 'object';
  }
}

/** Parses a dotted field path (as sluice_sdk::json::FieldPath). */
function fieldPath(text) {
  if (typeof text !== 'string') {
    throw `invalid type: ${kind(text)}, expected a string`;
  }
  const segments = text.split('.');
  if (segments.some((s) => s === '')) {
    throw `\`${text}\` is not a field path: use names separated by dots, e.g. \`user.email\``;
  }
  return { text, segments };
}

function child(v, seg) {
  if (Array.isArray(v)) {
    if (!/^\+?[0-9]+$/.test(seg)) return undefined;
    const i = Number(seg);
    return i < v.length ? v[i] : undefined;
  }
  if (v !== null && typeof v === 'object') {
    return Object.hasOwn(v, seg) ? v[seg] : undefined;
  }
  return undefined;
}

/** The field at `path`, or undefined if a segment is missing. */
function getPath(path, doc) {
  let v = doc;
  for (const seg of path.segments) {
    v = child(v, seg);
    if (v === undefined) return undefined;
  }
  return v;
}

/** JSON value equality (object key order does not matter). */
function jsonEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  }
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
}

function expectType(key, v, want) {
  const ok = want === 'number' ? typeof v === 'number'
    : want === 'boolean' ? typeof v === 'boolean'
      : want === 'string' ? typeof v === 'string'
        : want === 'array' ? Array.isArray(v) : true;
  if (!ok) throw `invalid type for \`${key}\`: ${kind(v)}, expected a ${want}`;
}

function parseConfig(text) {
  let c;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw `invalid config: ${e.message}`;
  }
  try {
    if (c === null || typeof c !== 'object' || Array.isArray(c)) {
      throw `invalid type: ${kind(c)}, expected struct Config`;
    }
    for (const k of Object.keys(c)) {
      if (!KEYS.includes(k)) {
        throw `unknown field \`${k}\`, expected one of ${KEYS.map((x) => `\`${x}\``).join(', ')}`;
      }
    }
    if (!Object.hasOwn(c, 'field')) throw 'missing field `field`';
    const field = fieldPath(c.field);
    // serde reads `null` for an Option field as "absent"; so do we.
    const set = PREDICATES.filter((k) => Object.hasOwn(c, k) && c[k] !== null);
    for (const k of set) {
      if (k in COMPARES) expectType(k, c[k], 'number');
      if (k === 'in') expectType(k, c[k], 'array');
      if (k === 'exists') expectType(k, c[k], 'boolean');
      if (k === 'contains') expectType(k, c[k], 'string');
    }
    return { field, c, set };
  } catch (e) {
    throw `invalid config: ${e}`;
  }
}

function invalid(reason) {
  return { tag: 'invalid', val: reason };
}

class JsonFilter {
  constructor(config) {
    const { field, c, set } = parseConfig(config);
    // Same order as the Rust stage, so a multi-predicate error is identical.
    if (set.length === 0) {
      throw `no predicate for field \`${field.text}\`: set one of equals, not_equals, in, exists, gt, gte, lt, lte, contains`;
    }
    if (set.length > 1) {
      throw `${set.length} predicates for field \`${field.text}\`: set exactly one`;
    }
    this.field = field;
    this.op = set[0];
    this.arg = c[this.op];
  }

  /** True to keep, false to drop; throws a stage-error for a bad message. */
  keeps(v) {
    const { op, arg, field } = this;
    if (op === 'exists') return (v !== undefined) === arg;
    if (op === 'not_equals') return v === undefined || !jsonEqual(v, arg);
    if (v === undefined) return false;
    if (op === 'equals') return jsonEqual(v, arg);
    if (op === 'in') return arg.some((x) => jsonEqual(v, x));
    if (op in COMPARES) {
      if (typeof v !== 'number') {
        throw invalid(`field \`${field.text}\` is a ${kind(v)}, but \`${op}\` needs a number`);
      }
      return COMPARES[op](v, arg);
    }
    // contains
    if (typeof v === 'string') return v.includes(arg);
    if (Array.isArray(v)) return v.some((i) => i === arg);
    throw invalid(`field \`${field.text}\` is a ${kind(v)}, but \`contains\` needs a string or an array`);
  }

  process(message) {
    let doc;
    try {
      doc = JSON.parse(utf8.decode(message.value));
    } catch (e) {
      throw invalid(`value is not the expected JSON: ${e.message}`);
    }
    return this.keeps(getPath(this.field, doc)) ? [message] : [];
  }
}

let filter = null;

/** Runs the filter on one message, as a WIT `outcome`. A JS exception that is
 * not a stage-error (a bug) propagates and traps, like a panic in Rust. */
function outcome(message) {
  if (filter === null) throw new Error('sluice called the stage before `init`');
  try {
    return { tag: 'ok', val: filter.process(message) };
  } catch (e) {
    if (e instanceof Error) throw e;
    return { tag: 'err', val: e };
  }
}

export const stage = {
  init(config) {
    filter = new JsonFilter(config);
    log('debug', `js-json-filter: keeping \`${filter.field.text}\` ${filter.op} ${JSON.stringify(filter.arg)}`);
  },

  process(message) {
    return outcome(message);
  },

  processBatch(messages) {
    return messages.map(outcome);
  },
};
