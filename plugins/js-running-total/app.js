// `js-running-total`: a running total per key, kept in the stage's state. The
// JavaScript twin of plugins/py-running-total, built with componentize-js.
//
//   [stages.config]
//   key_field = "user"      # dotted path to the key: a string, or a number used as text
//   amount_field = "amount" # dotted path to a number added to the key's total
//
// Each JSON message leaves with `"total"` added: the sum of `amount_field` over
// every message with its key so far, this one included. Totals live in the
// stage's state (`sluice:pipeline/state`), one entry per key holding the total
// as JSON number text (`42`, `12.5`), so they carry on across runs and
// `sluice state` shows them readably.
//
// Errors, all `invalid` (the key's total is then left as it was): a value that
// is not a JSON object, a missing field, a key that is not a string or a
// number, an amount that is not a number, a total that overflows.

import { log } from 'sluice:pipeline/log@0.1.0';
import { get, set } from 'sluice:pipeline/state@0.1.0';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const lossy = new TextDecoder('utf-8');
const encoder = new TextEncoder();

/** The JSON type name of `v`, for error messages. */
function kind(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'object' : typeof v;
}

/** A dotted field path, checked once, at `init`. */
function fieldPath(name, text) {
  if (typeof text !== 'string') throw `invalid config: \`${name}\` is a ${kind(text)}, expected a string`;
  const segments = text.split('.');
  if (segments.some((s) => s === '')) {
    throw `invalid config: \`${text}\` is not a field path: use names separated by dots, e.g. \`user.id\``;
  }
  return { text, segments };
}

/** The field at `path` in `doc`, or undefined. */
function getPath(path, doc) {
  let v = doc;
  for (const seg of path.segments) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, seg)) return undefined;
    v = v[seg];
  }
  return v;
}

class Invalid {
  constructor(reason) {
    this.reason = reason;
  }
}

class RunningTotal {
  constructor(configText) {
    let c;
    try {
      c = JSON.parse(configText);
    } catch (e) {
      throw `invalid config: ${e.message}`;
    }
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw `invalid config: expected a table, got a ${kind(c)}`;
    const unknown = Object.keys(c).find((k) => k !== 'key_field' && k !== 'amount_field');
    if (unknown !== undefined) {
      throw `invalid config: unknown field \`${unknown}\`, expected \`key_field\` or \`amount_field\``;
    }
    for (const name of ['key_field', 'amount_field']) {
      if (!Object.hasOwn(c, name)) throw `invalid config: missing field \`${name}\``;
    }
    this.keyField = fieldPath('key_field', c.key_field);
    this.amountField = fieldPath('amount_field', c.amount_field);
  }

  key(doc) {
    const v = getPath(this.keyField, doc);
    if (v === undefined) throw new Invalid(`no field \`${this.keyField.text}\``);
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return JSON.stringify(v);
    throw new Invalid(`field \`${this.keyField.text}\` is a ${kind(v)}, but the key must be a string or a number`);
  }

  amount(doc) {
    const v = getPath(this.amountField, doc);
    if (v === undefined) throw new Invalid(`no field \`${this.amountField.text}\``);
    if (typeof v !== 'number') {
      throw new Invalid(`field \`${this.amountField.text}\` is a ${kind(v)}, but the amount must be a number`);
    }
    return v;
  }

  process(message) {
    let doc;
    try {
      doc = JSON.parse(utf8.decode(message.value));
    } catch (e) {
      throw new Invalid(`value is not the expected JSON: ${e.message}`);
    }
    const keyText = this.key(doc);
    const amount = this.amount(doc);
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      throw new Invalid(`cannot add \`total\`: the value is a JSON ${kind(doc)}, not an object`);
    }
    const key = encoder.encode(keyText);
    const stored = get(key);
    let total = amount;
    if (stored !== undefined) {
      const text = lossy.decode(stored);
      const before = /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/.test(text) ? Number(text) : NaN;
      if (!Number.isFinite(before)) {
        throw new Invalid(`state under key \`${keyText}\` is not a decimal number: \`${text}\``);
      }
      total += before;
    }
    if (!Number.isFinite(total)) throw new Invalid(`the total for key \`${keyText}\` overflows`);
    doc.total = total;
    message.value = encoder.encode(JSON.stringify(doc));
    // Last, so that a message that fails leaves its key's total alone.
    set(key, encoder.encode(JSON.stringify(total)));
    return [message];
  }
}

let stage_ = null;

/** One message's WIT `outcome`. A JS exception that is not `Invalid` (a bug)
 * propagates and traps, like a panic in Rust. */
function outcome(message) {
  if (stage_ === null) throw new Error('sluice called the stage before `init`');
  try {
    return { tag: 'ok', val: stage_.process(message) };
  } catch (e) {
    if (e instanceof Invalid) return { tag: 'err', val: { tag: 'invalid', val: e.reason } };
    throw e;
  }
}

// componentize-js 0.23: `init` refuses its config by throwing a string;
// `process` returns the `outcome` alias as a value (exceptions are not caught).
export const stage = {
  init(config) {
    stage_ = new RunningTotal(config);
    log('debug', `js-running-total: totals of \`${stage_.amountField.text}\` per \`${stage_.keyField.text}\``);
  },

  process(message) {
    return outcome(message);
  },

  processBatch(messages) {
    return messages.map(outcome);
  },
};
