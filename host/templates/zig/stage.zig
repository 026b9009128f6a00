//! `{{name}}`: a sluice stage. Upper-cases the ASCII letters of each
//! message's value; other bytes (UTF-8 sequences included) pass through
//! unchanged. An empty message is rejected as `invalid` and goes to the
//! dead-letter file.
//!
//! Edit `exports_sluice_pipeline_stage_process` to make it yours, then
//! `sluice build` and `sluice test`. The `plugin` module is generated from
//! wit/ by `sluice build` (wit-bindgen's C bindings, through
//! `zig translate-c`, into target/gen/plugin.zig): its names are the C ones.
//!
//! Ownership: the arguments are yours (free them or move them into the
//! result); what you return must come from libc's malloc, and is freed by the
//! generated `cabi_post_*` functions after the host has read it.

const std = @import("std");
const c = @import("plugin");

/// The stage's `config` table from the pipeline file, as JSON text (`{}` when
/// there is none). Return false with `err` set to refuse it.
export fn exports_sluice_pipeline_stage_init(config: *c.plugin_string_t, err: *c.plugin_string_t) bool {
    _ = err;
    var buf: [256]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "{{name}} starting with config {s}", .{config.ptr[0..config.len]}) catch
        "{{name}} starting";
    log(c.SLUICE_PIPELINE_LOG_LEVEL_DEBUG, line);
    c.plugin_string_free(config);
    return true;
}

/// One message in; its outputs out in `ret` (none drops it, several split
/// it), or false with `err` set: INVALID is dead-lettered at once, TRANSIENT
/// is retried with backoff.
export fn exports_sluice_pipeline_stage_process(
    msg: *c.sluice_pipeline_types_message_t,
    ret: *c.sluice_pipeline_types_list_message_t,
    err: *c.sluice_pipeline_types_stage_error_t,
) bool {
    if (msg.value.len == 0) {
        c.sluice_pipeline_types_message_free(msg);
        err.tag = c.SLUICE_PIPELINE_TYPES_STAGE_ERROR_INVALID;
        c.plugin_string_dup(&err.val.invalid, "empty message");
        return false;
    }
    for (msg.value.ptr[0..msg.value.len]) |*b| b.* = std.ascii.toUpper(b.*);
    ret.ptr = alloc(c.sluice_pipeline_types_message_t, 1);
    ret.ptr[0] = msg.*; // moved: the output owns the message's buffers now
    ret.len = 1;
    return true;
}

/// Several messages in one call, one outcome each.
export fn exports_sluice_pipeline_stage_process_batch(
    messages: *c.exports_sluice_pipeline_stage_list_message_t,
    ret: *c.exports_sluice_pipeline_stage_list_outcome_t,
) void {
    const n = messages.len;
    ret.len = n;
    ret.ptr = null;
    if (n == 0) return; // an empty list's pointer is not a malloc'd block
    ret.ptr = alloc(c.sluice_pipeline_types_outcome_t, n);
    for (messages.ptr[0..n], ret.ptr[0..n]) |*m, *o| {
        o.is_err = !exports_sluice_pipeline_stage_process(m, &o.val.ok, &o.val.err);
    }
    // The messages were moved or freed one by one: free only the list.
    std.c.free(messages.ptr);
}

/// Writes `text` to the host's log (`sluice:pipeline/log`) at `level`.
fn log(level: c.sluice_pipeline_log_level_t, text: []const u8) void {
    var s = c.plugin_string_t{ .ptr = @constCast(text.ptr), .len = text.len };
    c.sluice_pipeline_log_log(level, &s);
}

/// `n` values of `T` from libc's malloc, which the bindings free with free().
fn alloc(comptime T: type, n: usize) [*c]T {
    const p = std.c.malloc(n * @sizeOf(T)) orelse @panic("out of memory");
    return @ptrCast(@alignCast(p));
}
