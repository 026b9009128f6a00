/*
 * c-json-filter: a sluice pipeline stage written in C.
 *
 *   [stages.config]
 *   field = "amount"   # a top-level key of the message's JSON object
 *   gte = 100          # keep the message when that field is a number >= gte
 *
 * Keeps a message whose JSON value is an object with a numeric `field` >= `gte`;
 * drops it (no output) when the number is smaller or the field is missing.
 * A value that is a JSON object whose field is not a number, or valid JSON that
 * is not an object, is `invalid` ("field `amount` is not a number"); a value that
 * is not JSON at all is `invalid` ("value is not valid JSON").
 *
 * JSON handling is a small recursive-descent scanner: it validates the whole
 * document (nesting limited to MAX_DEPTH), looks only at top-level keys and
 * converts numbers with strtod. It does not check that strings are valid UTF-8.
 * No stdio, so the core module imports nothing from WASI and needs no adapter.
 *
 * Memory (see the generated plugin.h / plugin.c): arguments of exported
 * functions are owned by this code and must be freed or moved; results are
 * freed by the generated cabi_post_* functions with free(), so everything
 * returned is malloc'd (or moved from an argument).
 */
#include "plugin.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef sluice_pipeline_types_message_t message_t;

#define MAX_DEPTH 128

/* ---- configuration ---- */

static bool configured;
static uint8_t *field_name; /* decoded UTF-8, malloc'd; not NUL-terminated */
static size_t field_len;
static double gte;

/* ---- JSON scanner ---- */

typedef struct {
  const uint8_t *p, *end;
} cur_t;

static void skip_ws(cur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool eat(cur_t *c, uint8_t ch) {
  skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

static int hex4(const uint8_t *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t h = p[i];
    v <<= 4;
    if (h >= '0' && h <= '9') v |= h - '0';
    else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
    else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
    else return -1;
  }
  return v;
}

/* Scans a string at c->p (which must be at '"'). On success sets *raw and *raw_len to
 * the bytes between the quotes, *escaped if they contain escapes, and moves past
 * the closing quote. */
static bool scan_string(cur_t *c, const uint8_t **raw, size_t *raw_len, bool *escaped) {
  if (c->p >= c->end || *c->p != '"') return false;
  const uint8_t *start = ++c->p;
  bool esc = false;
  while (c->p < c->end) {
    uint8_t ch = *c->p;
    if (ch == '"') {
      *raw = start;
      *raw_len = (size_t)(c->p - start);
      *escaped = esc;
      c->p++;
      return true;
    }
    if (ch < 0x20) return false;
    if (ch == '\\') {
      esc = true;
      if (c->end - c->p < 2) return false;
      uint8_t e = c->p[1];
      if (e == 'u') {
        if (c->end - c->p < 6 || hex4(c->p + 2) < 0) return false;
        c->p += 6;
      } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
        c->p += 2;
      } else {
        return false;
      }
      continue;
    }
    c->p++;
  }
  return false;
}

static size_t put_utf8(uint8_t *out, unsigned cp) {
  if (cp < 0x80) {
    out[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (uint8_t)(0xC0 | (cp >> 6));
    out[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (uint8_t)(0xE0 | (cp >> 12));
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (uint8_t)(0xF0 | (cp >> 18));
  out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* Decodes the contents of a string already checked by scan_string into `out`,
 * which must hold raw_len bytes (decoding never grows). Returns the length.
 * A lone surrogate becomes U+FFFD. */
static size_t decode_string(const uint8_t *raw, size_t raw_len, uint8_t *out) {
  size_t n = 0;
  for (size_t i = 0; i < raw_len;) {
    if (raw[i] != '\\') {
      out[n++] = raw[i++];
      continue;
    }
    uint8_t e = raw[i + 1];
    i += 2;
    switch (e) {
      case 'b': out[n++] = '\b'; break;
      case 'f': out[n++] = '\f'; break;
      case 'n': out[n++] = '\n'; break;
      case 'r': out[n++] = '\r'; break;
      case 't': out[n++] = '\t'; break;
      case 'u': {
        unsigned cp = (unsigned)hex4(raw + i);
        i += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= raw_len && raw[i] == '\\' && raw[i + 1] == 'u') {
          int lo = hex4(raw + i + 2);
          if (lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned)lo - 0xDC00);
            i += 6;
          }
        }
        if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;
        n += put_utf8(out + n, cp);
        break;
      }
      default: out[n++] = e; break; /* '"', '\\', '/' */
    }
  }
  return n;
}

/* Whether the string (raw contents from scan_string) equals the decoded field name. */
static bool key_is_field(const uint8_t *raw, size_t raw_len, bool escaped) {
  if (!escaped) return raw_len == field_len && memcmp(raw, field_name, raw_len) == 0;
  if (raw_len < field_len) return false;
  uint8_t *buf = malloc(raw_len ? raw_len : 1);
  if (!buf) abort();
  size_t n = decode_string(raw, raw_len, buf);
  bool eq = n == field_len && memcmp(buf, field_name, n) == 0;
  free(buf);
  return eq;
}

static bool is_digit(uint8_t ch) { return ch >= '0' && ch <= '9'; }

/* Scans a JSON number at c->p; when `out` is given, also converts it. */
static bool scan_number(cur_t *c, double *out) {
  const uint8_t *start = c->p;
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p >= c->end) return false;
  if (*c->p == '0') {
    c->p++;
  } else if (is_digit(*c->p)) {
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  } else {
    return false;
  }
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (c->p >= c->end || !is_digit(*c->p)) return false;
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (c->p >= c->end || !is_digit(*c->p)) return false;
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  }
  if (out) {
    /* strtod needs a NUL-terminated copy; the grammar above is a subset of its. */
    size_t len = (size_t)(c->p - start);
    char small[64];
    char *buf = len < sizeof small ? small : malloc(len + 1);
    if (!buf) abort();
    memcpy(buf, start, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    if (buf != small) free(buf);
  }
  return true;
}

static bool match_word(cur_t *c, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return false;
  c->p += n;
  return true;
}

/* Skips (and validates) one JSON value, after leading whitespace. */
static bool skip_value(cur_t *c, int depth) {
  skip_ws(c);
  if (c->p >= c->end) return false;
  const uint8_t *raw;
  size_t raw_len;
  bool escaped;
  switch (*c->p) {
    case '"': return scan_string(c, &raw, &raw_len, &escaped);
    case 't': return match_word(c, "true");
    case 'f': return match_word(c, "false");
    case 'n': return match_word(c, "null");
    case '[':
      if (depth >= MAX_DEPTH) return false;
      c->p++;
      if (eat(c, ']')) return true;
      do {
        if (!skip_value(c, depth + 1)) return false;
      } while (eat(c, ','));
      return eat(c, ']');
    case '{':
      if (depth >= MAX_DEPTH) return false;
      c->p++;
      if (eat(c, '}')) return true;
      do {
        skip_ws(c);
        if (!scan_string(c, &raw, &raw_len, &escaped) || !eat(c, ':') || !skip_value(c, depth + 1)) return false;
      } while (eat(c, ','));
      return eat(c, '}');
    default: return scan_number(c, NULL);
  }
}

/* Called for each top-level member of an object with the cursor at its value
 * (after whitespace); must consume the value. Returns false on invalid JSON. */
typedef bool (*member_fn)(void *ctx, const uint8_t *key, size_t key_len, bool escaped, cur_t *c);

typedef enum { SCAN_OK, SCAN_NOT_OBJECT, SCAN_BAD_JSON } scan_t;

/* Scans a whole JSON document that should be an object, calling `member` for
 * every top-level member. */
static scan_t scan_object(const uint8_t *buf, size_t len, member_fn member, void *ctx) {
  cur_t c = {buf, buf + len};
  skip_ws(&c);
  if (c.p < c.end && *c.p != '{') {
    if (!skip_value(&c, 0)) return SCAN_BAD_JSON;
    skip_ws(&c);
    return c.p == c.end ? SCAN_NOT_OBJECT : SCAN_BAD_JSON;
  }
  if (!eat(&c, '{')) return SCAN_BAD_JSON;
  if (!eat(&c, '}')) {
    do {
      const uint8_t *key;
      size_t key_len;
      bool escaped;
      skip_ws(&c);
      if (!scan_string(&c, &key, &key_len, &escaped) || !eat(&c, ':')) return SCAN_BAD_JSON;
      skip_ws(&c);
      if (!member(ctx, key, key_len, escaped, &c)) return SCAN_BAD_JSON;
    } while (eat(&c, ','));
    if (!eat(&c, '}')) return SCAN_BAD_JSON;
  }
  skip_ws(&c);
  return c.p == c.end ? SCAN_OK : SCAN_BAD_JSON;
}

static bool starts_number(const cur_t *c) {
  return c->p < c->end && (*c->p == '-' || is_digit(*c->p));
}

/* ---- init ---- */

typedef struct {
  const char *error; /* first problem found, a static string */
  const uint8_t *field_raw, *gte_raw;
  size_t field_raw_len, gte_raw_len;
  bool field_escaped, has_field, has_gte;
  double gte;
} config_t;

static bool config_member(void *ctx, const uint8_t *key, size_t key_len, bool escaped, cur_t *c) {
  config_t *cfg = ctx;
  if (!escaped && key_len == 5 && memcmp(key, "field", 5) == 0) {
    if (c->p < c->end && *c->p == '"') {
      if (!scan_string(c, &cfg->field_raw, &cfg->field_raw_len, &cfg->field_escaped)) return false;
      cfg->has_field = true;
      return true;
    }
    if (!cfg->error) cfg->error = "config `field` must be a string";
    return skip_value(c, 1);
  }
  if (!escaped && key_len == 3 && memcmp(key, "gte", 3) == 0) {
    if (starts_number(c)) {
      cfg->gte_raw = c->p;
      if (!scan_number(c, &cfg->gte)) return false;
      cfg->gte_raw_len = (size_t)(c->p - cfg->gte_raw);
      cfg->has_gte = true;
      return true;
    }
    if (!cfg->error) cfg->error = "config `gte` must be a number";
    return skip_value(c, 1);
  }
  if (!cfg->error) cfg->error = "unknown config key (expected only `field` and `gte`)";
  return skip_value(c, 1);
}

static void log_text(sluice_pipeline_log_level_t level, const uint8_t *parts[], const size_t lens[], size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += lens[i];
  uint8_t *buf = malloc(total ? total : 1);
  if (!buf) abort();
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(buf + at, parts[i], lens[i]);
    at += lens[i];
  }
  plugin_string_t s = {buf, total};
  sluice_pipeline_log_log(level, &s); /* imported: the caller keeps ownership */
  free(buf);
}

bool exports_sluice_pipeline_stage_init(plugin_string_t *config, plugin_string_t *err) {
  config_t cfg = {0};
  const char *error = NULL;
  switch (scan_object(config->ptr, config->len, config_member, &cfg)) {
    case SCAN_OK: error = cfg.error; break;
    case SCAN_NOT_OBJECT: error = "config must be a JSON object"; break;
    case SCAN_BAD_JSON: error = "config is not valid JSON"; break;
  }
  if (!error && !cfg.has_field) error = "config needs `field` (the name of a top-level JSON field)";
  if (!error && !cfg.has_gte) error = "config needs `gte` (a number)";
  if (!error && cfg.field_raw_len == 0) error = "config `field` must not be empty";
  if (error) {
    plugin_string_free(config);
    plugin_string_dup(err, error); /* malloc'd copy: freed by cabi_post_..._init */
    return false;
  }

  free(field_name);
  field_name = malloc(cfg.field_raw_len);
  if (!field_name) abort();
  field_len = decode_string(cfg.field_raw, cfg.field_raw_len, field_name);
  gte = cfg.gte;
  configured = true;

  const uint8_t *parts[] = {(const uint8_t *)"c-json-filter: keeping messages whose `", field_name,
                            (const uint8_t *)"` >= ", cfg.gte_raw};
  const size_t lens[] = {strlen((const char *)parts[0]), field_len, strlen((const char *)parts[2]), cfg.gte_raw_len};
  log_text(SLUICE_PIPELINE_LOG_LEVEL_INFO, parts, lens, 4);

  plugin_string_free(config); /* cfg pointed into it: free only after the last use */
  return true;
}

/* ---- process ---- */

typedef enum { FIELD_MISSING, FIELD_NUMBER, FIELD_NOT_NUMBER } field_state_t;

typedef struct {
  field_state_t state;
  double value;
} lookup_t;

static bool message_member(void *ctx, const uint8_t *key, size_t key_len, bool escaped, cur_t *c) {
  lookup_t *l = ctx;
  if (!key_is_field(key, key_len, escaped)) return skip_value(c, 1);
  /* a repeated key: the last one wins, as in serde_json */
  if (starts_number(c)) {
    if (!scan_number(c, &l->value)) return false;
    /* out of double range (e.g. 1e999): serde_json refuses these too */
    l->state = isfinite(l->value) ? FIELD_NUMBER : FIELD_NOT_NUMBER;
    return true;
  }
  l->state = FIELD_NOT_NUMBER;
  return skip_value(c, 1);
}

static void set_reason(plugin_string_t *reason, const char *pre, const uint8_t *mid, size_t mid_len, const char *post) {
  size_t a = strlen(pre), b = strlen(post);
  reason->len = a + mid_len + b;
  reason->ptr = malloc(reason->len);
  if (!reason->ptr) abort();
  memcpy(reason->ptr, pre, a);
  memcpy(reason->ptr + a, mid, mid_len);
  memcpy(reason->ptr + a + mid_len, post, b);
}

/* Takes ownership of `msg`: moves it into `ret` or frees it. */
bool exports_sluice_pipeline_stage_process(message_t *msg, sluice_pipeline_types_list_message_t *ret,
                                           sluice_pipeline_types_stage_error_t *err) {
  if (!configured) {
    sluice_pipeline_types_message_free(msg);
    err->tag = SLUICE_PIPELINE_TYPES_STAGE_ERROR_TRANSIENT;
    plugin_string_dup(&err->val.transient, "c-json-filter was not initialised");
    return false;
  }
  lookup_t l = {FIELD_MISSING, 0};
  scan_t scan = scan_object(msg->value.ptr, msg->value.len, message_member, &l);
  if (scan == SCAN_OK && l.state == FIELD_NUMBER) {
    ret->len = 0;
    ret->ptr = NULL;
    if (l.value >= gte) { /* keep: move the message into the output list */
      ret->ptr = malloc(sizeof(message_t));
      if (!ret->ptr) abort();
      ret->ptr[0] = *msg;
      ret->len = 1;
    } else {
      sluice_pipeline_types_message_free(msg);
    }
    return true;
  }
  sluice_pipeline_types_message_free(msg);
  if (scan == SCAN_OK && l.state == FIELD_MISSING) { /* drop */
    ret->len = 0;
    ret->ptr = NULL;
    return true;
  }
  err->tag = SLUICE_PIPELINE_TYPES_STAGE_ERROR_INVALID;
  if (scan == SCAN_BAD_JSON) plugin_string_dup(&err->val.invalid, "value is not valid JSON");
  else set_reason(&err->val.invalid, "field `", field_name, field_len, "` is not a number");
  return false;
}

/* Takes ownership of the list and of every message in it. */
void exports_sluice_pipeline_stage_process_batch(exports_sluice_pipeline_stage_list_message_t *messages,
                                                 exports_sluice_pipeline_stage_list_outcome_t *ret) {
  size_t n = messages->len;
  ret->len = n;
  ret->ptr = NULL;
  if (n == 0) return; /* an empty list's pointer is not a malloc'd block (see cabi_realloc) */
  ret->ptr = malloc(n * sizeof *ret->ptr);
  if (!ret->ptr) abort();
  for (size_t i = 0; i < n; i++) {
    sluice_pipeline_types_outcome_t *o = &ret->ptr[i];
    o->is_err = !exports_sluice_pipeline_stage_process(&messages->ptr[i], &o->val.ok, &o->val.err);
  }
  free(messages->ptr); /* the messages themselves were moved or freed above */
}
