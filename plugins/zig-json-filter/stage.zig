//! zig-json-filter: a sluice pipeline stage written in Zig.
//!
//!   [stages.config]
//!   field = "amount"   # a top-level key of the message's JSON object
//!   gte = 100          # keep the message when that field is a number >= gte
//!
//! Keeps a message whose JSON value is an object with a numeric `field` >=
//! `gte`; drops it (no output) when the number is smaller or the field is
//! missing. A JSON object whose field is not a number, or JSON that is not an
//! object, is `invalid` ("field `amount` is not a number"); a value that is not
//! JSON at all is `invalid` ("value is not valid JSON"). The same stage as
//! plugins/c-json-filter, with Zig's std.json for the parsing.
//!
//! The `plugin` module is wit-bindgen's C bindings of wit/, translated by
//! `zig translate-c` (build.sh). Arguments of the exported functions are this
//! code's to free or move; results are freed by the generated cabi_post_*
//! functions with free(), so everything returned comes from libc's malloc.

const std = @import("std");
const c = @import("plugin");

const Message = c.sluice_pipeline_types_message_t;

const Config = struct {
    field: []const u8,
    gte: f64,
};

/// The parsed config (its arena holds `field`); null until `init` accepts one.
var config: ?std.json.Parsed(Config) = null;

export fn exports_sluice_pipeline_stage_init(text: *c.plugin_string_t, err: *c.plugin_string_t) bool {
    defer c.plugin_string_free(text);
    const json = text.ptr[0..text.len];
    // alloc_always: `field` is copied into the arena, not a slice of `text`, freed on return.
    const parsed = std.json.parseFromSlice(Config, std.heap.c_allocator, json, .{ .allocate = .alloc_always }) catch |e| {
        var buf: [160]u8 = undefined;
        const why = std.fmt.bufPrint(&buf, "zig-json-filter needs `field` (a string) and `gte` (a number), and no other keys ({s})", .{@errorName(e)}) catch unreachable;
        c.plugin_string_dup_n(err, why.ptr, why.len);
        return false;
    };
    if (config) |old| old.deinit();
    config = parsed;
    var buf: [160]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "keeping messages whose `{s}` is >= {d}", .{ parsed.value.field, parsed.value.gte }) catch
        "keeping messages whose field is large enough";
    var s = c.plugin_string_t{ .ptr = @constCast(line.ptr), .len = line.len };
    c.sluice_pipeline_log_log(c.SLUICE_PIPELINE_LOG_LEVEL_DEBUG, &s);
    return true;
}

/// What the message's value says about the field.
const Verdict = enum { keep, drop, not_a_number, not_json };

fn judge(value: []const u8, cfg: Config) Verdict {
    // An arena per message: the parsed tree goes in one free.
    var arena = std.heap.ArenaAllocator.init(std.heap.c_allocator);
    defer arena.deinit();
    // A repeated key: the last one wins, as in serde_json.
    const doc = std.json.parseFromSliceLeaky(std.json.Value, arena.allocator(), value, .{
        .duplicate_field_behavior = .use_last,
    }) catch return .not_json;
    const object = switch (doc) {
        .object => |o| o,
        else => return .not_a_number,
    };
    const number: f64 = switch (object.get(cfg.field) orelse return .drop) {
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        // Integers past i64: as a float, like serde_json's f64.
        .number_string => |s| std.fmt.parseFloat(f64, s) catch return .not_a_number,
        else => return .not_a_number,
    };
    if (!std.math.isFinite(number)) return .not_a_number;
    return if (number >= cfg.gte) .keep else .drop;
}

/// Takes ownership of `msg`: moves it into `ret` or frees it.
export fn exports_sluice_pipeline_stage_process(
    msg: *Message,
    ret: *c.sluice_pipeline_types_list_message_t,
    err: *c.sluice_pipeline_types_stage_error_t,
) bool {
    ret.ptr = null;
    ret.len = 0;
    const cfg = (config orelse {
        c.sluice_pipeline_types_message_free(msg);
        err.tag = c.SLUICE_PIPELINE_TYPES_STAGE_ERROR_TRANSIENT;
        c.plugin_string_dup(&err.val.transient, "zig-json-filter was not initialised");
        return false;
    }).value;
    switch (judge(msg.value.ptr[0..msg.value.len], cfg)) {
        .keep => {
            ret.ptr = alloc(Message, 1);
            ret.ptr[0] = msg.*; // moved: the output owns the message's buffers now
            ret.len = 1;
            return true;
        },
        .drop => {
            c.sluice_pipeline_types_message_free(msg);
            return true;
        },
        .not_a_number => {
            c.sluice_pipeline_types_message_free(msg);
            err.tag = c.SLUICE_PIPELINE_TYPES_STAGE_ERROR_INVALID;
            const why = std.fmt.allocPrint(std.heap.c_allocator, "field `{s}` is not a number", .{cfg.field}) catch
                @panic("out of memory");
            defer std.heap.c_allocator.free(why);
            c.plugin_string_dup_n(&err.val.invalid, why.ptr, why.len);
            return false;
        },
        .not_json => {
            c.sluice_pipeline_types_message_free(msg);
            err.tag = c.SLUICE_PIPELINE_TYPES_STAGE_ERROR_INVALID;
            c.plugin_string_dup(&err.val.invalid, "value is not valid JSON");
            return false;
        },
    }
}

/// Takes ownership of the list and of every message in it.
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
    std.c.free(messages.ptr); // the messages themselves were moved or freed above
}

/// `n` values of `T` from libc's malloc, which the bindings free with free().
fn alloc(comptime T: type, n: usize) [*c]T {
    const p = std.c.malloc(n * @sizeOf(T)) orelse @panic("out of memory");
    return @ptrCast(@alignCast(p));
}
