/* `{{name}}`: a sluice stage. Upper-cases the ASCII letters of each message's
 * value; other bytes (UTF-8 sequences included) pass through unchanged. An
 * empty message is rejected as `invalid` and goes to the dead-letter file.
 *
 * Edit `exports_sluice_pipeline_stage_process` to make it yours, then
 * `sluice build` and `sluice test`. `plugin.h` is generated from wit/ by
 * `sluice build` (into target/gen/).
 *
 * Ownership: the arguments are yours (free them or move them into the
 * result); what you return must be malloc'd, and is freed by the generated
 * `cabi_post_*` functions after the host has read it.
 *
 * Log through sluice_pipeline_log_log (shown in init). stdio works too
 * (`sluice build` adds the WASI preview 1 adapter it needs): what the stage
 * prints to stdout or stderr lands in the host's log, a line a record.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

/* The stage's `config` table from the pipeline file, as JSON text (`{}` when
 * there is none). Return false with `err` set to refuse it. */
bool exports_sluice_pipeline_stage_init(plugin_string_t *config, plugin_string_t *err) {
  (void)err;
  char text[256];
  snprintf(text, sizeof text, "{{name}} starting with config %.*s", (int)config->len, (const char *)config->ptr);
  plugin_string_t line = {(uint8_t *)text, strlen(text)}; /* cut at 255 bytes, if longer */
  sluice_pipeline_log_log(SLUICE_PIPELINE_LOG_LEVEL_DEBUG, &line); /* borrowed: the host copies it */
  plugin_string_free(config);
  return true;
}

/* One message in; its outputs out in `ret` (none drops it, several split it),
 * or false with `err` set: INVALID is dead-lettered at once, TRANSIENT is
 * retried with backoff. */
bool exports_sluice_pipeline_stage_process(sluice_pipeline_types_message_t *msg,
                                           sluice_pipeline_types_list_message_t *ret,
                                           sluice_pipeline_types_stage_error_t *err) {
  if (msg->value.len == 0) {
    sluice_pipeline_types_message_free(msg);
    err->tag = SLUICE_PIPELINE_TYPES_STAGE_ERROR_INVALID;
    plugin_string_dup(&err->val.invalid, "empty message");
    return false;
  }
  for (size_t i = 0; i < msg->value.len; i++) {
    uint8_t b = msg->value.ptr[i];
    if (b >= 'a' && b <= 'z') msg->value.ptr[i] = b - ('a' - 'A');
  }
  ret->ptr = malloc(sizeof *ret->ptr);
  if (!ret->ptr) abort();
  ret->ptr[0] = *msg; /* moved: the output owns the message's buffers now */
  ret->len = 1;
  return true;
}

/* Several messages in one call, one outcome each. */
void exports_sluice_pipeline_stage_process_batch(exports_sluice_pipeline_stage_list_message_t *messages,
                                                 exports_sluice_pipeline_stage_list_outcome_t *ret) {
  size_t n = messages->len;
  ret->len = n;
  ret->ptr = NULL;
  if (n > 0) {
    ret->ptr = malloc(n * sizeof *ret->ptr);
    if (!ret->ptr) abort();
    for (size_t i = 0; i < n; i++) {
      sluice_pipeline_types_outcome_t *o = &ret->ptr[i];
      o->is_err = !exports_sluice_pipeline_stage_process(&messages->ptr[i], &o->val.ok, &o->val.err);
    }
    /* The messages were moved or freed one by one: free only the list (an
     * empty list's pointer is not a malloc'd block). */
    free(messages->ptr);
  }
}
