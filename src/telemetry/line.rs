//! How a log line is written: the event formatter and span field formatter the fmt layer uses,
//! for both `--log-format pretty` and `json`.
//!
//! They write the same lines as tracing-subscriber's own `Full` and `Json` formats (timestamp,
//! level, span scope, target, message and fields; in JSON the innermost span's fields under
//! `span`), in one pass into the line buffer: strings and numbers are written as they are,
//! span fields are formatted once when the span opens (JSON as a ready-made fragment, never
//! parsed again), and the timestamp's digits are written directly. A request pays for its span
//! and its access line on every request, so this is on the hot path.
//!
//! Nothing a client sent can forge a line: in pretty lines every control character is escaped
//! (`\n`, `\x1b`…), and JSON strings are escaped as JSON.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write};
use std::thread::LocalKey;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats span fields (once, when the span opens or a field is recorded) and whole events.
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    pub json: bool,
}

impl<'w> FormatFields<'w> for LineFormat {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        thread_local! {
            /// Kept between spans, so that a span's fields are written without growing a buffer.
            static FIELDS: RefCell<String> = const { RefCell::new(String::new()) };
        }
        through_scratch(&FIELDS, 16 * 1024, &mut writer, |buf| {
            let mut v = Fields::new(buf, self.json, true);
            fields.record(&mut v);
        })
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut v = Fields::new(&mut current.fields, self.json, first);
        fields.record(&mut v);
        Ok(())
    }
}

impl<S> FormatEvent<S, LineFormat> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, LineFormat>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        thread_local! {
            /// The line being written, kept between events so that a line costs no allocation.
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        through_scratch(&LINE, 64 * 1024, &mut writer, |line| self.write_line(line, ctx, event))
    }
}

/// Write what `fill` writes through `writer`, using this thread's buffer in `scratch` (kept
/// between calls, so that a line costs no allocation; dropped once it grew past `keep` bytes, so
/// that one long line is not kept for ever). When the buffer is in use (something logged from a
/// field's `Display` while a line was being written), a fresh one.
fn through_scratch(
    scratch: &'static LocalKey<RefCell<String>>,
    keep: usize,
    writer: &mut Writer<'_>,
    fill: impl FnOnce(&mut String),
) -> fmt::Result {
    scratch.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            fill(&mut buf);
            let written = writer.write_str(&buf);
            if buf.capacity() > keep {
                *buf = String::new();
            }
            written
        }
        Err(_) => {
            let mut buf = String::new();
            fill(&mut buf);
            writer.write_str(&buf)
        }
    })
}

impl LineFormat {
    fn write_line<S>(&self, line: &mut String, ctx: &FmtContext<'_, S, LineFormat>, event: &Event<'_>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        if self.json {
            line.push_str("{\"timestamp\":\"");
            timestamp(line, SystemTime::now());
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push_str("\",\"fields\":{");
            let mut v = Fields::new(line, true, true);
            event.record(&mut v);
            let log_target = v.log_target.take();
            line.push_str("},\"target\":");
            json_str(line, log_target.as_deref().unwrap_or(meta.target()));
            if let Some(span) = ctx.lookup_current() {
                line.push_str(",\"span\":{");
                let ext = span.extensions();
                let fields = ext.get::<FormattedFields<LineFormat>>().map(|f| f.fields.as_str()).unwrap_or("");
                line.push_str(fields);
                if !fields.is_empty() {
                    line.push(',');
                }
                line.push_str("\"name\":");
                json_str(line, span.name());
                line.push('}');
            }
            line.push_str("}\n");
        } else {
            timestamp(line, SystemTime::now());
            // The level right-aligned in five columns, as tracing-subscriber writes it.
            let level = meta.level().as_str();
            line.push(' ');
            (level.len()..5).for_each(|_| line.push(' '));
            line.push_str(level);
            line.push(' ');
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    line.push_str(span.name());
                    let ext = span.extensions();
                    if let Some(f) = ext.get::<FormattedFields<LineFormat>>().filter(|f| !f.fields.is_empty()) {
                        line.push('{');
                        line.push_str(&f.fields);
                        line.push('}');
                    }
                    line.push_str(": ");
                }
            }
            let start = line.len();
            let mut v = Fields::new(line, false, true);
            event.record(&mut v);
            let log_target = v.log_target.take();
            let target = log_target.as_deref().unwrap_or(meta.target());
            line.insert_str(start, ": ");
            line.insert_str(start, target);
            line.push('\n');
        }
    }
}

/// Writes `name=value` pairs (pretty) or `"name":value` members (JSON) into a line.
struct Fields<'a> {
    out: &'a mut String,
    json: bool,
    first: bool,
    /// Events bridged from the `log` crate carry their real target in a field.
    log_target: Option<String>,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut String, json: bool, first: bool) -> Self {
        Self { out, json, first, log_target: None }
    }

    /// The separator and the name; `false` when the field is not written at all.
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        if !self.first {
            self.out.push(if self.json { ',' } else { ' ' });
        }
        self.first = false;
        if self.json {
            json_str(self.out, name);
            self.out.push(':');
        } else if name != "message" {
            self.out.push_str(name);
            self.out.push('=');
        }
        true
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.name(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn unsigned(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            write_u64(self.out, value);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_string());
            return;
        }
        if !self.name(field) {
            return;
        }
        if self.json {
            json_str(self.out, value);
        } else if field.name() == "message" {
            escaped(self.out, value);
        } else if !value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            // As tracing-subscriber writes a string field: quoted, with Debug's escapes.
            let _ = write!(self.out, "{value:?}");
        } else {
            self.out.push('"');
            self.out.push_str(value);
            self.out.push('"');
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.unsigned(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match u64::try_from(value) {
            Ok(v) => self.unsigned(field, v),
            Err(_) => self.number(field, value),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.name(field) || write_millis(self.out, value) {
            return;
        }
        if self.json && !value.is_finite() {
            // JSON has no NaN or infinity.
            json_str(self.out, &value.to_string());
        } else {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.name(field) {
            return;
        }
        if self.json {
            self.out.push('"');
            let _ = write!(Escaping { out: self.out, json: true }, "{value:?}");
            self.out.push('"');
        } else {
            let _ = write!(Escaping { out: self.out, json: false }, "{value:?}");
        }
    }
}

/// A number's decimal digits, as `Display` writes them, without the formatting machinery (a
/// status code is on every access line).
fn write_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    digits[at..].iter().for_each(|&d| out.push(char::from(d)));
}

/// Writes text escaped as it goes, for a JSON string's inside or a pretty line.
struct Escaping<'a> {
    out: &'a mut String,
    json: bool,
}

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.json {
            json_inner(self.out, s);
        } else {
            escaped(self.out, s);
        }
        Ok(())
    }
}

/// Whether `s` holds a control character: C0, DEL, or C1 (`U+0080`–`U+009F`, encoded after a
/// `0xC2` byte).
fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
}

/// Text for a pretty line: control characters (newlines, escape sequences, C1 codes) escaped,
/// so that no value can start a line of its own or drive a terminal.
fn escaped(out: &mut String, s: &str) {
    if !has_control(s) {
        out.push_str(s);
        return;
    }
    for ch in s.chars() {
        if ch.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", ch as u32);
        } else {
            out.push(ch);
        }
    }
}

/// A JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_inner(out, s);
    out.push('"');
}

/// The inside of a JSON string literal.
fn json_inner(out: &mut String, s: &str) {
    if !has_control(s) && !s.bytes().any(|b| b == b'"' || b == b'\\') {
        out.push_str(s);
        return;
    }
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it: `2026-11-30T01:02:03.456789Z`.
/// The calendar part is worked out once a second per thread; the microseconds are written as
/// digits.
fn timestamp(out: &mut String, now: SystemTime) {
    thread_local! {
        /// The second last written and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [b'0'; 19])) };
    }
    let Ok(since) = now.duration_since(UNIX_EPOCH) else {
        return calendar_timestamp(out, now);
    };
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let mut fresh = String::with_capacity(27);
        calendar_timestamp(&mut fresh, UNIX_EPOCH + std::time::Duration::from_secs(secs));
        let Some(head) = fresh.as_bytes().get(..19).and_then(|h| <[u8; 19]>::try_from(h).ok()) else {
            return calendar_timestamp(out, now);
        };
        text = head;
        SECOND.set((secs, text));
    }
    out.push_str(std::str::from_utf8(&text).unwrap_or("0000-00-00T00:00:00"));
    let mut frac = *b".000000Z";
    let mut micros = since.subsec_micros();
    for digit in frac[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&frac).unwrap_or(".000000Z"));
}

/// The same text, through the calendar every time.
fn calendar_timestamp(out: &mut String, now: SystemTime) {
    let t = time::OffsetDateTime::from(now);
    let (h, m, s, us) = t.to_hms_micro();
    let _ = write!(out, "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{us:06}Z", t.year(), u8::from(t.month()), t.day());
}

/// A non-negative number below 10^9 with at most three decimals (a latency in milliseconds)
/// written as `{}` writes it, without the general float formatting; `false` for anything else.
fn write_millis(out: &mut String, value: f64) -> bool {
    // `-0.0` is in the range but `{}` writes it `-0`.
    if !(0.0..1e9).contains(&value) || value.is_sign_negative() {
        return false;
    }
    let thousandths = (value * 1000.0).round();
    if thousandths / 1000.0 != value {
        return false;
    }
    let thousandths = thousandths as u64;
    let (whole, mut frac) = (thousandths / 1000, thousandths % 1000);
    write_u64(out, whole);
    if frac != 0 {
        out.push('.');
        // The three decimals without their trailing zeros.
        let mut unit = 100;
        while frac > 0 {
            out.push(char::from(b'0' + (frac / unit) as u8));
            frac %= unit;
            unit /= 10;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_match_the_calendar() {
        let at = |s: u64, us: u32| {
            let mut out = String::new();
            timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us.into()));
            out
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(1_795_914_245, 123_456), "2026-11-29T01:04:05.123456Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
        // The same second again (from the per-second cache), then the next one.
        assert_eq!(at(4_102_444_800, 70), "2100-01-01T00:00:00.000070Z");
        assert_eq!(at(4_102_444_801, 999_000), "2100-01-01T00:00:01.999000Z");
        for s in [0, 59, 86_399, 951_868_799, 1_795_914_245] {
            let mut calendar = String::new();
            calendar_timestamp(&mut calendar, UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(1));
            assert_eq!(at(s, 1), calendar);
        }
    }

    #[test]
    fn millis_are_written_as_display_writes_them() {
        let mut values =
            vec![0.0, 0.001, 0.01, 0.1, 0.25, 1.0, 2.5, 10.0, 12.345, 999.999, 1000.0, 123_456.789, 999_999_999.999];
        values.extend((0..20_000u32).map(|us| f64::from(us) / 1000.0));
        values.extend((0..2_000u32).map(|n| f64::from(n) * 1.37 + 0.0005));
        for v in values {
            let mut fast = String::new();
            if write_millis(&mut fast, v) {
                assert_eq!(fast, format!("{v}"), "{v}");
            }
        }
        let mut out = String::new();
        for odd in [-1.0, -0.0, 0.0001, 1e9, f64::NAN, f64::INFINITY, 1.0 / 3.0] {
            assert!(!write_millis(&mut out, odd), "{odd}");
        }
        assert!(out.is_empty());
        assert!(write_millis(&mut out, 0.125) && out == "0.125");
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 200, 404, 999, 1000, 65_535, u64::from(u32::MAX), u64::MAX];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((0..64).map(|b| (1u64 << b) - 1));
        for v in values {
            let mut out = String::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(json: bool, f: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Captured::default();
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .fmt_fields(LineFormat { json })
            .event_format(LineFormat { json })
            .with_writer(move || sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn request_line() {
        // As the edge writes them: string values, the access line's message as a string field.
        let span =
            tracing::info_span!("request", request_id = "r-1", method = "GET", principal = tracing::field::Empty);
        let _e = span.enter();
        span.record("principal", "user:42");
        tracing::info!(
            target: "gatehouse::access",
            message = "request completed",
            route = "/v1/\"x\"\n",
            status = 200u16,
            latency_ms = 0.25,
            ok = true,
            delta = -3i64
        );
        tracing::warn!(agent = ?"evil\n2026-01-01T00:00:00Z ERROR forged\u{1b}[31m", "odd \u{1b} message\r\nline");
    }

    #[test]
    fn json_lines_parse_and_carry_the_span() {
        let out = capture(true, request_line);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{out}");
        let v = &lines[0];
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "gatehouse::access");
        assert_eq!(v["fields"]["message"], "request completed");
        assert_eq!(v["fields"]["route"], "/v1/\"x\"\n");
        assert_eq!(v["fields"]["status"], 200);
        assert_eq!(v["fields"]["latency_ms"], 0.25);
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["fields"]["delta"], -3);
        assert_eq!(v["span"]["request_id"], "r-1");
        assert_eq!(v["span"]["method"], "GET");
        assert_eq!(v["span"]["principal"], "user:42");
        assert_eq!(v["span"]["name"], "request");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["fields"]["agent"], "\"evil\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[31m\"");
        assert_eq!(lines[1]["fields"]["message"], "odd \u{1b} message\r\nline");
    }

    #[test]
    fn pretty_lines_cannot_be_forged() {
        let out = capture(false, request_line);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first = lines[0];
        assert!(
            first.ends_with(
                "  INFO request{request_id=\"r-1\" method=\"GET\" principal=\"user:42\"}: gatehouse::access: \
                 request completed route=\"/v1/\\\"x\\\"\\n\" status=200 latency_ms=0.25 ok=true delta=-3"
            ),
            "{first}"
        );
        assert!(lines[1].contains(" WARN request{"), "{}", lines[1]);
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    }
}
