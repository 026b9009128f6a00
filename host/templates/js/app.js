// `{{name}}`: a sluice stage. Upper-cases the ASCII letters of each message's
// value; other bytes (UTF-8 sequences included) pass through unchanged. An
// empty message is rejected as `invalid` and goes to the dead-letter file.
//
// Edit `process` to make it yours, then `sluice build` and `sluice test`.
// A message is { key, value, headers, timestamp }: `value` is a Uint8Array,
// `key` a Uint8Array or undefined, `timestamp` a BigInt or undefined.

import { log } from 'sluice:pipeline/log@0.1.0';

export const stage = {
  // The stage's `config` table from the pipeline file, as JSON text (`{}`
  // when there is none). Throw a string to refuse it.
  init(config) {
    log('debug', `{{name}} starting with config ${config}`);
  },

  // One message in; its outputs out (an empty list drops it, several split
  // it), or an error: `invalid` is dead-lettered at once, `transient` is
  // retried with backoff. Return the error: a throw would be a trap.
  process(message) {
    if (message.value.length === 0) {
      return { tag: 'err', val: { tag: 'invalid', val: 'empty message' } };
    }
    const value = Uint8Array.from(message.value, (b) => (b >= 0x61 && b <= 0x7a ? b - 0x20 : b));
    return { tag: 'ok', val: [{ ...message, value }] };
  },

  // Several messages in one call, one outcome each.
  processBatch(messages) {
    return messages.map((m) => this.process(m));
  },
};
