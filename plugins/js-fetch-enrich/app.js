// `js-fetch-enrich`: for each JSON message, GETs a URL built from the message
// with `fetch()` and stores the response under a field. A JavaScript take on
// plugins/http-enrich, built with componentize-js against the `plugin` world.
//
//   [[stages]]
//   name = "users"
//   plugin = "js-fetch-enrich.wasm"
//   config = { url = "http://127.0.0.1:8080/users/{user.id}.json", target = "user_profile" }
//   grants = { allow_http = ["127.0.0.1:8080"] }   # without it every request is denied
//
// `{path}` placeholders are filled from the message's fields (dotted paths),
// percent-encoded (encodeURIComponent, plus `!'()*`, so only RFC 3986
// unreserved characters stay literal). The body is stored under `target`
// (default `enriched`), as JSON if it parses, else as text.
//
// Errors: a missing placeholder field (or one that is an object, array or
// null) is `invalid`; a non-2xx status or a failed/denied fetch is
// `transient`, so the host retries it and dead-letters it when retries run
// out. (The Rust http-enrich calls a denied request `invalid`; StarlingMonkey's
// fetch reports every wasi:http error as the same TypeError, so this stage
// cannot tell a denial from a network failure.)
//
// `fetch` is async but `process` is a sync WIT export: componentize-js 0.23
// awaits a Promise returned by an export, running the component's event loop
// (wasi:io poll) until it settles, then lowers the value.
//
// WIT mapping (componentize-js 0.23): `init` refuses its config by throwing a
// string. `process` returns the `outcome` type alias, for which the generated
// bindings do NOT catch exceptions: it must resolve to `{ tag: 'ok', val:
// [messages] }` or `{ tag: 'err', val: { tag: 'invalid' | 'transient', val } }`
// (a rejection is a trap).

import { log } from 'sluice:pipeline/log@0.1.0';

const KEYS = ['url', 'target'];
const utf8 = new TextDecoder('utf-8', { fatal: true });
const lossy = new TextDecoder('utf-8');
const encoder = new TextEncoder();

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
  const segments = text.split('.');
  if (segments.some((s) => s === '')) {
    throw `\`${text}\` is not a field path: use names separated by dots, e.g. \`user.email\``;
  }
  return { text, segments };
}

function index(seg) {
  return /^\+?[0-9]+$/.test(seg) ? Number(seg) : undefined;
}

function child(v, seg) {
  if (Array.isArray(v)) {
    const i = index(seg);
    return i !== undefined && i < v.length ? v[i] : undefined;
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

/** Sets an own data property (a `__proto__` key too, as JSON.parse does). */
function define(obj, key, value) {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Sets the field at `path`, creating missing objects along the way (as
 * FieldPath::set). Returns the (possibly new) root; throws a reason string. */
function setPath(path, doc, value) {
  const root = { v: doc };
  let holder = root;
  let key = 'v';
  for (const seg of path.segments.slice(0, -1)) {
    let cur = holder[key];
    if (cur === null) cur = holder[key] = {};
    if (Array.isArray(cur)) {
      const i = index(seg);
      if (i === undefined || i >= cur.length) {
        throw `cannot set \`${path.text}\`: \`${seg}\` is not an index of the array`;
      }
      if (cur[i] === null) cur[i] = {};
    } else if (typeof cur === 'object') {
      if (!Object.hasOwn(cur, seg)) define(cur, seg, null);
    } else {
      throw `cannot set \`${path.text}\`: \`${seg}\` is inside a ${kind(cur)}`;
    }
    holder = cur;
    key = Array.isArray(cur) ? index(seg) : seg;
  }
  const last = path.segments[path.segments.length - 1];
  let parent = holder[key];
  if (parent === null) parent = holder[key] = {};
  if (Array.isArray(parent)) {
    const i = index(last);
    if (i === undefined || i >= parent.length) {
      throw `cannot set \`${path.text}\`: \`${last}\` is not an index of the array`;
    }
    parent[i] = value;
  } else if (typeof parent === 'object') {
    define(parent, last, value);
  } else {
    throw `cannot set \`${path.text}\`: its parent is a ${kind(parent)}`;
  }
  return root.v;
}

/** Percent-encodes everything but RFC 3986 unreserved characters. */
function encode(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function parseTemplate(url) {
  const parts = [];
  let rest = url;
  for (;;) {
    const open = rest.indexOf('{');
    if (open < 0) break;
    const close = rest.indexOf('}', open);
    if (close < 0) throw `unclosed \`{\` in url \`${url}\``;
    if (open > 0) parts.push({ text: rest.slice(0, open) });
    parts.push({ field: fieldPath(rest.slice(open + 1, close)) });
    rest = rest.slice(close + 1);
  }
  if (rest !== '') parts.push({ text: rest });
  if (!url.startsWith('http://') && !url.startsWith('https://')) {
    throw `url \`${url}\` must start with http:// or https://`;
  }
  return parts;
}

function parseConfig(text) {
  let c;
  try {
    c = JSON.parse(text);
  } catch (e) {
    throw `invalid config: ${e.message}`;
  }
  if (c === null || typeof c !== 'object' || Array.isArray(c)) {
    throw `invalid config: invalid type: ${kind(c)}, expected struct Config`;
  }
  for (const k of Object.keys(c)) {
    if (!KEYS.includes(k)) {
      throw `invalid config: unknown field \`${k}\`, expected \`url\` or \`target\``;
    }
  }
  if (!Object.hasOwn(c, 'url')) throw 'invalid config: missing field `url`';
  for (const k of KEYS) {
    if (Object.hasOwn(c, k) && typeof c[k] !== 'string') {
      throw `invalid config: invalid type for \`${k}\`: ${kind(c[k])}, expected a string`;
    }
  }
  return { url: c.url, target: c.target ?? 'enriched' };
}

const invalid = (val) => ({ tag: 'err', val: { tag: 'invalid', val } });
const transient = (val) => ({ tag: 'err', val: { tag: 'transient', val } });

class FetchEnrich {
  constructor(config) {
    const c = parseConfig(config);
    this.template = parseTemplate(c.url);
    this.target = fieldPath(c.target);
  }

  /** The URL for `doc`; throws an `invalid` outcome. */
  urlFor(doc) {
    let url = '';
    for (const part of this.template) {
      if (part.text !== undefined) {
        url += part.text;
        continue;
      }
      const v = getPath(part.field, doc);
      if (v === undefined) throw invalid(`field \`${part.field.text}\` for the url is missing`);
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
        url += encode(String(v));
      } else {
        throw invalid(`field \`${part.field.text}\` is a ${kind(v)}, not a URL part`);
      }
    }
    return url;
  }

  /** One message to a WIT `outcome` (never rejects for a bad message). */
  async process(message) {
    let doc;
    try {
      doc = JSON.parse(utf8.decode(message.value));
    } catch (e) {
      return invalid(`value is not the expected JSON: ${e.message}`);
    }
    let url;
    try {
      url = this.urlFor(doc);
    } catch (e) {
      if (e instanceof Error) throw e;
      return e;
    }
    let body;
    try {
      const response = await fetch(url);
      if (!response.ok) {
        return transient(`GET ${url}: HTTP ${response.status}`);
      }
      body = new Uint8Array(await response.arrayBuffer());
    } catch (e) {
      return transient(`GET ${url}: ${e instanceof Error ? e.message : e}`);
    }
    let value;
    const text = lossy.decode(body);
    try {
      value = JSON.parse(text);
    } catch {
      value = text;
    }
    try {
      doc = setPath(this.target, doc, value);
    } catch (e) {
      return invalid(e);
    }
    return { tag: 'ok', val: [{ ...message, value: encoder.encode(JSON.stringify(doc)) }] };
  }
}

let enrich = null;

export const stage = {
  init(config) {
    enrich = new FetchEnrich(config);
    log('debug', `js-fetch-enrich: storing responses under \`${enrich.target.text}\``);
  },

  process(message) {
    if (enrich === null) throw new Error('sluice called the stage before `init`');
    return enrich.process(message);
  },

  // The batch's requests are in flight at once; outcomes stay in input order.
  processBatch(messages) {
    if (enrich === null) throw new Error('sluice called the stage before `init`');
    return Promise.all(messages.map((m) => enrich.process(m)));
  },
};
