//! Cron expressions: parsing into compact bitsets, and finding the next matching *naive*
//! (wall-clock) date-time.
//!
//! Owns the cron grammar and the calendar arithmetic on naive local times. It must not know
//! about time zones, DST or UTC instants (`zone.rs` and `mod.rs` map wall times to instants),
//! and it must not read the clock.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike};

use crate::core::FieldError;

/// Longest cron expression accepted, in bytes.
pub const CRON_EXPR_LEN_MAX: usize = 256;

/// Years a naive search looks ahead before it gives up. The Gregorian calendar repeats every
/// 400 years (146,097 days, a whole number of weeks), so an expression that matches at all
/// matches again within any 400-year window.
pub(crate) const CRON_SEARCH_YEARS_MAX: i32 = 401;

/// Last year any schedule computes in (the tz database has no meaning beyond, and chrono's
/// range ends not far after).
pub(crate) const YEAR_MAX: i32 = 9999;

const FIELD: &str = "schedule.cron";

// `flags` bits.
const DOM_STAR: u8 = 1 << 0;
const DOW_STAR: u8 = 1 << 1;
const DOM_LAST: u8 = 1 << 2;
const DOM_LAST_WEEKDAY: u8 = 1 << 3;
const HAS_SECONDS: u8 = 1 << 4;

// `dow_nth` bits: bit k-1 is the k-th occurrence of that weekday in the month, NTH_LAST the last.
const NTH_LAST: u8 = 1 << 5;

/// One bit every 7 days, from bit 0: shifted by a weekday's first day of the month it marks
/// every occurrence of that weekday.
const EVERY_7_DAYS: u64 = 1 | 1 << 7 | 1 << 14 | 1 << 21 | 1 << 28;

/// A compiled cron expression: one bitset per field plus the `L`/`W`/`#` extras.
///
/// 40 bytes; `Copy` so that the owner can hold one per job cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cron {
    seconds: u64,
    minutes: u64,
    /// Bits 0..=23.
    hours: u32,
    /// Bits 1..=31: plain days of the month.
    dom: u32,
    /// Bits 1..=31: days whose nearest weekday (`15W`) matches.
    dom_nearest_weekday: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday: every occurrence of these weekdays.
    dow: u8,
    /// Per weekday (0 = Sunday): `#k` occurrences and `L` (last) occurrence.
    dow_nth: [u8; 7],
    flags: u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl FieldKind {
    fn name(self) -> &'static str {
        match self {
            FieldKind::Second => "second",
            FieldKind::Minute => "minute",
            FieldKind::Hour => "hour",
            FieldKind::DayOfMonth => "day-of-month",
            FieldKind::Month => "month",
            FieldKind::DayOfWeek => "day-of-week",
        }
    }

    fn min(self) -> u32 {
        match self {
            FieldKind::DayOfMonth | FieldKind::Month => 1,
            _ => 0,
        }
    }

    fn max(self) -> u32 {
        match self {
            FieldKind::Second | FieldKind::Minute => 59,
            FieldKind::Hour => 23,
            FieldKind::DayOfMonth => 31,
            FieldKind::Month => 12,
            // 7 is Sunday again, folded into 0 after parsing.
            FieldKind::DayOfWeek => 7,
        }
    }

    fn is_day(self) -> bool {
        matches!(self, FieldKind::DayOfMonth | FieldKind::DayOfWeek)
    }

    /// What a value of this field looks like, for error messages.
    fn expected(self) -> String {
        match self {
            FieldKind::Month => "1-12 or JAN-DEC".to_string(),
            FieldKind::DayOfWeek => "0-7 or SUN-SAT".to_string(),
            _ => format!("{}-{}", self.min(), self.max()),
        }
    }
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DOW_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Where a field sits in what the user wrote, to name it in errors.
#[derive(Clone, Copy)]
struct FieldCtx {
    kind: FieldKind,
    /// 1-based position in the expression as written.
    position: usize,
}

impl FieldCtx {
    fn err(self, message: impl AsRef<str>) -> FieldError {
        FieldError::new(
            FIELD,
            format!(
                "field {} ({}) {}",
                self.position,
                self.kind.name(),
                message.as_ref()
            ),
        )
    }
}

/// What one field parses to before it is packed into `Cron`.
#[derive(Default)]
struct FieldBits {
    /// Plain values, bit n = value n.
    bits: u64,
    /// The field was written `*` or `?`: for the day fields this decides the Vixie OR rule.
    star: bool,
    last: bool,
    last_weekday: bool,
    nearest_weekday: u32,
    nth: [u8; 8],
}

impl Cron {
    /// Parses a 5-field (`min hour dom month dow`) or 6-field (`sec min hour dom month dow`)
    /// expression, or a macro such as `@daily`.
    pub(crate) fn parse(expr: &str) -> Result<Cron, FieldError> {
        if expr.len() > CRON_EXPR_LEN_MAX {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "expression is {} bytes long: expected at most {CRON_EXPR_LEN_MAX}",
                    expr.len()
                ),
            ));
        }
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new(
                FIELD,
                "expression is empty: expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading second field, or a macro such as @daily",
            ));
        }
        let text = if trimmed.starts_with('@') {
            expand_macro(trimmed)?
        } else {
            trimmed
        };
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let kinds: &[FieldKind] = match fields.len() {
            5 => &[
                FieldKind::Minute,
                FieldKind::Hour,
                FieldKind::DayOfMonth,
                FieldKind::Month,
                FieldKind::DayOfWeek,
            ],
            6 => &[
                FieldKind::Second,
                FieldKind::Minute,
                FieldKind::Hour,
                FieldKind::DayOfMonth,
                FieldKind::Month,
                FieldKind::DayOfWeek,
            ],
            n => {
                return Err(FieldError::new(
                    FIELD,
                    format!(
                        "expression has {n} fields: expected 5 (minute hour day-of-month month day-of-week) or 6 (second minute hour day-of-month month day-of-week)"
                    ),
                ));
            }
        };
        let mut parsed: Vec<FieldBits> = Vec::with_capacity(6);
        for (i, (&kind, text)) in kinds.iter().zip(&fields).enumerate() {
            let ctx = FieldCtx {
                kind,
                position: i + 1,
            };
            parsed.push(parse_field(ctx, text)?);
        }
        let has_seconds = fields.len() == 6;
        let mut it = parsed.into_iter();
        let seconds = if has_seconds {
            it.next().map(|f| f.bits).unwrap_or(1)
        } else {
            1
        };
        let (Some(minutes), Some(hours), Some(dom), Some(months), Some(dow)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            unreachable!("field count checked above");
        };

        let mut flags = 0u8;
        if dom.star {
            flags |= DOM_STAR;
        }
        if dow.star {
            flags |= DOW_STAR;
        }
        if dom.last {
            flags |= DOM_LAST;
        }
        if dom.last_weekday {
            flags |= DOM_LAST_WEEKDAY;
        }
        if has_seconds {
            flags |= HAS_SECONDS;
        }
        // 7 is Sunday too.
        let dow_bits = ((dow.bits | (dow.bits >> 7)) & 0x7f) as u8;
        let mut dow_nth = [0u8; 7];
        for (w, slot) in dow_nth.iter_mut().enumerate() {
            *slot = dow.nth[w];
        }
        dow_nth[0] |= dow.nth[7];

        Ok(Cron {
            seconds,
            minutes: minutes.bits,
            hours: hours.bits as u32,
            dom: dom.bits as u32,
            dom_nearest_weekday: dom.nearest_weekday,
            months: months.bits as u16,
            dow: dow_bits,
            dow_nth,
            flags,
        })
    }

    /// Whether the expression had a seconds field (6 fields).
    #[cfg(test)]
    pub(crate) fn has_seconds(&self) -> bool {
        self.flags & HAS_SECONDS != 0
    }

    /// Whether `t` (a wall-clock time, whole seconds) matches the expression.
    #[cfg(test)]
    pub(crate) fn matches(&self, t: &NaiveDateTime) -> bool {
        t.nanosecond() == 0
            && self.seconds & (1 << t.second()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << t.month()) != 0
            && self.day_mask(t.year(), t.month()) & (1 << t.day()) != 0
    }

    /// The first naive time `>= from` (rounded up to a whole second) that matches, searching
    /// up to the end of year `from.year() + CRON_SEARCH_YEARS_MAX` (and never past `YEAR_MAX`).
    pub(crate) fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let limit_year = from
            .year()
            .saturating_add(CRON_SEARCH_YEARS_MAX)
            .min(YEAR_MAX);
        self.next_naive_until(from, limit_year)
    }

    /// As `next_naive`, searching no later than the end of `limit_year`.
    pub(crate) fn next_naive_until(
        &self,
        from: NaiveDateTime,
        limit_year: i32,
    ) -> Option<NaiveDateTime> {
        let from = ceil_to_second(from)?;
        let (mut year, mut month, mut day) = (from.year(), from.month(), from.day());
        // Time of day to search from on `day`; None = from midnight.
        let mut time = Some((from.hour(), from.minute(), from.second()));
        loop {
            if year > limit_year {
                return None;
            }
            if self.months & (1 << month) == 0 {
                (year, month) = self.next_month(year, month);
                day = 1;
                time = None;
                continue;
            }
            let mask = u64::from(self.day_mask(year, month)) >> day << day;
            if mask == 0 {
                (year, month) = self.next_month(year, month);
                day = 1;
                time = None;
                continue;
            }
            let found = mask.trailing_zeros();
            if found != day {
                day = found;
                time = None;
            }
            if let Some((h, m, s)) = self.time_of_day_from(time) {
                return NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(h, m, s);
            }
            // Nothing left today; day may pass the month's end, the mask then sends us on.
            day += 1;
            time = None;
            if day > 31 {
                (year, month) = self.next_month(year, month);
                day = 1;
            }
        }
    }

    /// The next month after (year, month) whose bit is set.
    fn next_month(&self, year: i32, month: u32) -> (i32, u32) {
        let later = u32::from(self.months) >> (month + 1) << (month + 1);
        if later != 0 {
            (year, later.trailing_zeros())
        } else {
            (year + 1, u32::from(self.months).trailing_zeros())
        }
    }

    /// The first (h, m, s) at or after `from` in a day (from midnight when None).
    fn time_of_day_from(&self, from: Option<(u32, u32, u32)>) -> Option<(u32, u32, u32)> {
        let first_minute = self.minutes.trailing_zeros();
        let first_second = self.seconds.trailing_zeros();
        let Some((h0, m0, s0)) = from else {
            return Some((self.hours.trailing_zeros(), first_minute, first_second));
        };
        let h = next_bit(u64::from(self.hours), h0)?;
        if h > h0 {
            return Some((h, first_minute, first_second));
        }
        if let Some(m) = next_bit(self.minutes, m0) {
            if m > m0 {
                return Some((h, m, first_second));
            }
            if let Some(s) = next_bit(self.seconds, s0) {
                return Some((h, m, s));
            }
            if let Some(m) = next_bit(self.minutes, m0 + 1) {
                return Some((h, m, first_second));
            }
        }
        let h = next_bit(u64::from(self.hours), h0 + 1)?;
        Some((h, first_minute, first_second))
    }

    /// Bits 1..=31: the days of (year, month) that match the day-of-month and day-of-week
    /// fields together (Vixie rule: when both are restricted, either may match).
    fn day_mask(&self, year: i32, month: u32) -> u32 {
        let len = days_in_month(year, month);
        let valid = ((1u64 << (len + 1)) - 2) as u32;
        let dom_star = self.flags & DOM_STAR != 0;
        let dow_star = self.flags & DOW_STAR != 0;
        if dom_star && dow_star {
            return valid;
        }
        let first_weekday = NaiveDate::from_ymd_opt(year, month, 1)
            .map(|d| d.weekday().num_days_from_sunday())
            .unwrap_or(0);
        match (dom_star, dow_star) {
            (true, _) => self.dow_days(len, first_weekday) & valid,
            (false, true) => self.dom_days(len, first_weekday) & valid,
            (false, false) => {
                (self.dom_days(len, first_weekday) | self.dow_days(len, first_weekday)) & valid
            }
        }
    }

    fn dom_days(&self, len: u32, first_weekday: u32) -> u32 {
        let mut mask = self.dom;
        let weekday_of = |d: u32| (first_weekday + d - 1) % 7;
        if self.flags & DOM_LAST != 0 {
            mask |= 1 << len;
        }
        if self.flags & DOM_LAST_WEEKDAY != 0 {
            let last = match weekday_of(len) {
                6 => len - 1,
                0 => len - 2,
                _ => len,
            };
            mask |= 1 << last;
        }
        let mut w = self.dom_nearest_weekday;
        while w != 0 {
            let d = w.trailing_zeros();
            w &= w - 1;
            if d > len {
                break;
            }
            // The nearest weekday never leaves the month: a Saturday 1st moves to Monday 3rd,
            // a Sunday last day back to Friday.
            let target = match weekday_of(d) {
                6 if d > 1 => d - 1,
                6 => d + 2,
                0 if d < len => d + 1,
                0 => d - 2,
                _ => d,
            };
            mask |= 1 << target;
        }
        mask
    }

    fn dow_days(&self, len: u32, first_weekday: u32) -> u32 {
        let mut mask = 0u64;
        for w in 0..7u32 {
            let first = 1 + (w + 7 - first_weekday) % 7;
            if self.dow & (1 << w) != 0 {
                mask |= EVERY_7_DAYS << first;
            }
            let nth = self.dow_nth[w as usize];
            if nth != 0 {
                for k in 0..5u32 {
                    if nth & (1 << k) != 0 {
                        mask |= 1 << (first + 7 * k);
                    }
                }
                if nth & NTH_LAST != 0 {
                    mask |= 1 << (first + 7 * ((len - first) / 7));
                }
            }
        }
        // Days past `len` are cut by the caller's `valid` mask.
        mask as u32
    }
}

fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from << from;
    (rest != 0).then(|| rest.trailing_zeros())
}

fn ceil_to_second(t: NaiveDateTime) -> Option<NaiveDateTime> {
    if t.nanosecond() == 0 {
        return Some(t);
    }
    t.with_nanosecond(0)?
        .checked_add_signed(TimeDelta::seconds(1))
}

pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn expand_macro(text: &str) -> Result<&'static str, FieldError> {
    let lower = text.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => {
            return Err(FieldError::new(
                FIELD,
                "@reboot is not supported: Meridian has no reboot to run at; use a once schedule for a one-shot job",
            ));
        }
        _ => {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "unknown macro '{text}': expected one of @yearly @annually @monthly @weekly @daily @midnight @hourly"
                ),
            ));
        }
    })
}

fn parse_field(ctx: FieldCtx, text: &str) -> Result<FieldBits, FieldError> {
    let upper = text.to_ascii_uppercase();
    let mut out = FieldBits {
        star: upper == "*" || (upper == "?" && ctx.kind.is_day()),
        ..FieldBits::default()
    };
    for item in upper.split(',') {
        parse_item(ctx, item, &mut out)?;
    }
    Ok(out)
}

fn parse_item(ctx: FieldCtx, item: &str, out: &mut FieldBits) -> Result<(), FieldError> {
    let kind = ctx.kind;
    if item.is_empty() {
        return Err(ctx.err("has an empty list item: check for ',,' or a ',' at either end"));
    }
    let (base, step) = match item.split_once('/') {
        None => (item, None),
        Some((base, step)) => {
            if step.is_empty() {
                return Err(ctx.err(format!(
                    "has an empty step in '{item}': expected a number after '/'"
                )));
            }
            if step.contains('/') {
                return Err(ctx.err(format!(
                    "has more than one '/' in '{item}': expected start/step or start-end/step"
                )));
            }
            let step_max = kind.max();
            let value = parse_number(step).ok_or_else(|| {
                ctx.err(format!(
                    "step '{step}' in '{item}' is not a number: expected 1-{step_max}"
                ))
            })?;
            if value == 0 {
                return Err(ctx.err(format!("step 0 in '{item}': expected a step of at least 1")));
            }
            if value > step_max {
                return Err(ctx.err(format!(
                    "step {value} in '{item}' out of range 1-{step_max}"
                )));
            }
            if base.is_empty() {
                return Err(ctx.err(format!(
                    "has no start before the step in '{item}': expected */{value} or a start such as 0/{value}"
                )));
            }
            (base, Some(value))
        }
    };

    // The day fields' special forms (`L`, `W`, `#`) take no step.
    let special = match kind {
        FieldKind::DayOfMonth => base.contains(['L', 'W', '#']),
        FieldKind::DayOfWeek => {
            base.contains('#') || base.ends_with('L') || is_number_then(base, 'W')
        }
        _ => false,
    };
    if special {
        if step.is_some() {
            return Err(ctx.err(format!("'{item}': '{base}' cannot take a step")));
        }
        return parse_special_day(ctx, base, out);
    }
    if !kind.is_day() {
        let misuse = if base.contains('#') {
            Some("'#' is only allowed in day-of-week")
        } else if base == "L" || base == "LW" || is_number_then(base, 'L') {
            Some("'L' is only allowed in day-of-month and day-of-week")
        } else if is_number_then(base, 'W') {
            Some("'W' is only allowed in day-of-month")
        } else {
            None
        };
        if let Some(misuse) = misuse {
            return Err(ctx.err(format!("'{item}': {misuse}")));
        }
    }

    let (lo, hi) = if base == "*" || base == "?" {
        if base == "?" && !kind.is_day() {
            return Err(ctx.err("'?' is only allowed in day-of-month and day-of-week: use '*'"));
        }
        if base == "?" && step.is_some() {
            return Err(ctx.err(format!("'{item}': '?' must stand alone")));
        }
        (kind.min(), kind.max())
    } else if let Some((a, b)) = base.split_once('-') {
        let lo = parse_value(ctx, a, item)?;
        let mut hi = parse_value(ctx, b, item)?;
        // `FRI-SUN` means Friday to Sunday: Sunday at the end of a range is 7.
        if kind == FieldKind::DayOfWeek && b == "SUN" && lo > 0 {
            hi = 7;
        }
        if lo > hi {
            return Err(ctx.err(format!(
                "range {a}-{b} is reversed: expected start <= end (ranges do not wrap around)"
            )));
        }
        (lo, hi)
    } else {
        let v = parse_value(ctx, base, item)?;
        // `5/15` means 5 to the field's maximum, every 15.
        (v, if step.is_some() { kind.max() } else { v })
    };
    let step = step.unwrap_or(1);
    let mut v = lo;
    while v <= hi {
        out.bits |= 1 << v;
        v += step;
    }
    Ok(())
}

/// `L`, `LW`, `15W` in day-of-month; `5L`, `FRIL`, `1#2`, `MON#2` in day-of-week.
fn parse_special_day(ctx: FieldCtx, base: &str, out: &mut FieldBits) -> Result<(), FieldError> {
    match ctx.kind {
        FieldKind::DayOfMonth => {
            if base.contains('#') {
                return Err(ctx.err(format!(
                    "'{base}': '#' is only allowed in day-of-week (e.g. 1#2 for the second monday)"
                )));
            }
            if base == "L" {
                out.last = true;
            } else if base == "LW" {
                out.last_weekday = true;
            } else if let Some(day) = base.strip_suffix('W') {
                if day.is_empty() {
                    return Err(ctx.err("'W' needs a day before it, e.g. 15W or LW"));
                }
                if day.contains('-') {
                    return Err(ctx.err(format!(
                        "'{base}': 'W' takes a single day, e.g. 15W, not a range"
                    )));
                }
                let d = parse_value(ctx, day, base)?;
                out.nearest_weekday |= 1 << d;
            } else {
                return Err(ctx.err(format!(
                    "cannot parse '{base}': expected L, LW, a day followed by W (15W), or 1-31"
                )));
            }
            Ok(())
        }
        _ => {
            if base.contains('W') {
                return Err(ctx.err(format!("'{base}': 'W' is only allowed in day-of-month")));
            }
            if base.contains('-') {
                return Err(ctx.err(format!(
                    "'{base}': 'L' and '#' take a single weekday, not a range"
                )));
            }
            if let Some((w, n)) = base.split_once('#') {
                let weekday = parse_value(ctx, w, base)?;
                let nth = parse_number(n)
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| {
                        ctx.err(format!(
                            "'{base}': occurrence '{n}' after '#' out of range 1-5"
                        ))
                    })?;
                out.nth[weekday as usize] |= 1 << (nth - 1);
                Ok(())
            } else if let Some(w) = base.strip_suffix('L') {
                if w.is_empty() {
                    return Err(ctx.err(
                        "'L' alone is ambiguous in day-of-week: write the weekday before it, e.g. 5L for the last friday",
                    ));
                }
                let weekday = parse_value(ctx, w, base)?;
                out.nth[weekday as usize] |= NTH_LAST;
                Ok(())
            } else {
                Err(ctx.err(format!(
                    "cannot parse '{base}': expected a weekday (0-7 or SUN-SAT), NL or N#K"
                )))
            }
        }
    }
}

/// `15W`, `5L`: digits then `suffix`.
fn is_number_then(s: &str, suffix: char) -> bool {
    s.strip_suffix(suffix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Overflow is reported as out of range by the caller's range check.
    Some(s.parse::<u32>().unwrap_or(u32::MAX))
}

/// A single value of a field: a number in range, or a month/weekday name.
fn parse_value(ctx: FieldCtx, s: &str, item: &str) -> Result<u32, FieldError> {
    let kind = ctx.kind;
    if s.is_empty() {
        return Err(ctx.err(format!(
            "has a missing value in '{item}': expected {}",
            kind.expected()
        )));
    }
    if let Some(v) = parse_number(s) {
        if v < kind.min() || v > kind.max() {
            return Err(ctx.err(format!(
                "value {s} out of range {}-{}",
                kind.min(),
                kind.max()
            )));
        }
        return Ok(v);
    }
    let names: &[&str] = match kind {
        FieldKind::Month => &MONTH_NAMES,
        FieldKind::DayOfWeek => &DOW_NAMES,
        _ => &[],
    };
    if let Some(i) = names.iter().position(|n| *n == s) {
        return Ok(i as u32 + kind.min());
    }
    if s.bytes().all(|b| b.is_ascii_alphabetic()) && !names.is_empty() {
        return Err(ctx.err(format!("unknown name '{s}': expected {}", kind.expected())));
    }
    Err(ctx.err(format!("cannot parse '{s}': expected {}", kind.expected())))
}
