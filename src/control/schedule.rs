//! GPUStack 2.3's `scaling_schedule`, pure: validation (GPUStack's rules, naming the field) and
//! which replicas a schedule wants at an instant (GPUStack's `compute_desired_replicas`: the most
//! recently opened window wins, windows opened at the same instant resolve to the larger count,
//! outside every window the baseline). Crons have five fields and are evaluated in UTC; the
//! instant is passed in, so tests choose the clock.

use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::api::{MAX_WINDOW_SECONDS, ScalingSchedule};

/// A bad schedule: the field (`scaling_schedule.…`) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: String,
    pub rule: String,
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), rule: rule.into() }
}

/// Parses a five-field cron (minute hour day-of-month month day-of-week, as croniter reads it by
/// default; `@daily` and the like too). Day of month and day of week both restricted: either
/// matches, as in cron and croniter.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && fields != 5 {
        return Err(format!(
            "{expr:?} has {fields} fields; a cron here has five: minute hour day-of-month month day-of-week"
        ));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    parser.parse(expr).map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// GPUStack's checks: durations in 1 s..=366 days and crons that can fire, always; while enabled,
/// a baseline, at least one rule, and a cron and a duration on every rule. `max_replicas`: the
/// deployment limit on a rule's replicas and the baseline.
pub fn validate(s: &ScalingSchedule, max_replicas: u32) -> Result<(), Invalid> {
    for (i, rule) in s.rules.iter().enumerate() {
        let at = |f: &str| format!("scaling_schedule.rules[{i}].{f}");
        if let Some(d) = rule.duration_seconds
            && (d == 0 || d > MAX_WINDOW_SECONDS)
        {
            return Err(invalid(at("duration_seconds"), format!("must be between 1 and {MAX_WINDOW_SECONDS}")));
        }
        if !rule.start_cron.trim().is_empty() {
            let cron = parse_cron(&rule.start_cron).map_err(|e| invalid(at("start_cron"), e))?;
            // Parses but can never fire (30 February): refused, as GPUStack does.
            if cron.find_next_occurrence(&Utc::now(), false).is_err() {
                return Err(invalid(at("start_cron"), format!("{:?} never fires", rule.start_cron)));
            }
        }
        if rule.replicas > max_replicas {
            return Err(invalid(at("replicas"), format!("must be between 0 and {max_replicas}")));
        }
    }
    if let Some(b) = s.baseline_replicas
        && b > max_replicas
    {
        return Err(invalid("scaling_schedule.baseline_replicas", format!("must be between 0 and {max_replicas}")));
    }
    if !s.enabled {
        // A disabled schedule may hold rules being written (GPUStack accepts them).
        return Ok(());
    }
    if s.baseline_replicas.is_none() {
        return Err(invalid("scaling_schedule.baseline_replicas", "required when the schedule is enabled"));
    }
    if s.rules.is_empty() {
        return Err(invalid("scaling_schedule.rules", "at least one rule is required when the schedule is enabled"));
    }
    for (i, rule) in s.rules.iter().enumerate() {
        if rule.start_cron.trim().is_empty() {
            return Err(invalid(
                format!("scaling_schedule.rules[{i}].start_cron"),
                "required for every rule when the schedule is enabled",
            ));
        }
        if rule.duration_seconds.is_none() {
            return Err(invalid(
                format!("scaling_schedule.rules[{i}].duration_seconds"),
                "required for every rule when the schedule is enabled",
            ));
        }
    }
    Ok(())
}

/// What a schedule wants now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A window is open: its rule's replicas, its name (or `rules[i]`) and when it closes.
    Window { replicas: u32, rule: String, until: DateTime<Utc> },
    /// No window is open: the baseline.
    Baseline(u32),
}

impl Want {
    pub fn replicas(&self) -> u32 {
        match self {
            Want::Window { replicas, .. } | Want::Baseline(replicas) => *replicas,
        }
    }
}

/// The replicas `s` wants at `now`, or `None` when it is disabled, paused, has no rules, or is
/// outside every window with no baseline (nothing to enforce). Rules whose cron or duration is
/// missing or unusable are skipped, as GPUStack skips them.
pub fn desired(s: &ScalingSchedule, now: DateTime<Utc>) -> Option<Want> {
    if !s.enabled || s.paused || s.rules.is_empty() {
        return None;
    }
    let mut best: Option<(DateTime<Utc>, Want)> = None;
    for (i, rule) in s.rules.iter().enumerate() {
        let Some(duration) = rule.duration_seconds.filter(|d| *d > 0) else { continue };
        if rule.start_cron.trim().is_empty() {
            continue;
        }
        let Ok(cron) = parse_cron(&rule.start_cron) else { continue };
        // The window that opened last at or before now ([start, end)).
        let Ok(start) = cron.find_previous_occurrence(&now, true) else { continue };
        let until = start + Duration::seconds(i64::from(duration));
        if !(start <= now && now < until) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((at, w)) => start > *at || (start == *at && rule.replicas > w.replicas()),
        };
        if better {
            let name = rule.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("rules[{i}]"));
            best = Some((start, Want::Window { replicas: rule.replicas, rule: name, until }));
        }
    }
    match best {
        Some((_, w)) => Some(w),
        None => s.baseline_replicas.map(Want::Baseline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ScalingScheduleRule;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn rule(name: &str, cron: &str, secs: u32, replicas: u32) -> ScalingScheduleRule {
        ScalingScheduleRule {
            start_cron: cron.into(),
            duration_seconds: Some(secs),
            replicas,
            name: Some(name.into()).filter(|n: &String| !n.is_empty()),
        }
    }

    fn schedule(rules: Vec<ScalingScheduleRule>) -> ScalingSchedule {
        ScalingSchedule { enabled: true, paused: false, baseline_replicas: Some(1), rules }
    }

    #[test]
    fn windows_table() {
        let day = rule("day", "0 8 * * *", 10 * 3600, 3);
        let lunch = rule("lunch", "0 12 * * *", 3600, 5);
        let weekend = rule("weekend", "0 0 * * 6", 2 * 86400, 0);
        let night = rule("night", "0 22 * * *", 10 * 3600, 2);
        let same_start = rule("", "0 8 * * *", 600, 4);
        // 2026-12-05 is a Saturday.
        let cases: &[(&str, Vec<ScalingScheduleRule>, &str, Option<u32>)] = &[
            ("before the window: baseline", vec![day.clone()], "2026-12-07T07:59:59Z", Some(1)),
            ("the window opens on its start", vec![day.clone()], "2026-12-07T08:00:00Z", Some(3)),
            ("inside", vec![day.clone()], "2026-12-07T17:59:59Z", Some(3)),
            ("closed at its end", vec![day.clone()], "2026-12-07T18:00:00Z", Some(1)),
            (
                "overlap: the most recently opened wins",
                vec![day.clone(), lunch.clone()],
                "2026-12-07T12:30:00Z",
                Some(5),
            ),
            ("order does not matter", vec![lunch.clone(), day.clone()], "2026-12-07T12:30:00Z", Some(5)),
            ("after the inner window, the outer again", vec![day.clone(), lunch], "2026-12-07T13:00:00Z", Some(3)),
            ("same start: the larger count", vec![same_start.clone(), day.clone()], "2026-12-07T08:05:00Z", Some(4)),
            ("same start, the shorter one closed", vec![same_start, day.clone()], "2026-12-07T08:10:00Z", Some(3)),
            ("across midnight", vec![night.clone()], "2026-12-08T03:00:00Z", Some(2)),
            ("a weekend window, on Sunday", vec![weekend.clone(), day.clone()], "2026-12-06T09:00:00Z", Some(3)),
            ("a weekend window, Sunday night", vec![weekend.clone(), day], "2026-12-06T20:00:00Z", Some(0)),
            ("the weekend is over on Monday", vec![weekend], "2026-12-07T00:00:00Z", Some(1)),
        ];
        for (what, rules, now, want) in cases {
            let got = desired(&schedule(rules.clone()), at(now)).map(|w| w.replicas());
            assert_eq!(got, *want, "{what}");
        }
    }

    #[test]
    fn nothing_to_enforce() {
        let rules = vec![rule("day", "0 8 * * *", 3600, 3)];
        let noon = at("2026-12-07T12:00:00Z");
        let off = ScalingSchedule { enabled: false, ..schedule(rules.clone()) };
        let paused = ScalingSchedule { paused: true, ..schedule(rules.clone()) };
        let no_baseline = ScalingSchedule { baseline_replicas: None, ..schedule(rules.clone()) };
        for (what, s) in [("disabled", off), ("paused", paused), ("outside, no baseline", no_baseline)] {
            assert_eq!(desired(&s, noon), None, "{what}");
        }
        let open = desired(&schedule(rules), at("2026-12-07T08:30:00Z"));
        assert_eq!(
            open,
            Some(Want::Window { replicas: 3, rule: "day".into(), until: at("2026-12-07T09:00:00Z") }),
            "the window says which rule and until when"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let ok = schedule(vec![rule("day", "0 8 * * 1-5", 3600, 3)]);
        assert_eq!(validate(&ok, 1024), Ok(()));
        let mut no_baseline = ok.clone();
        no_baseline.baseline_replicas = None;
        let mut no_rules = ok.clone();
        no_rules.rules.clear();
        let mut no_cron = ok.clone();
        no_cron.rules[0].start_cron.clear();
        let mut no_duration = ok.clone();
        no_duration.rules[0].duration_seconds = None;
        let mut long = ok.clone();
        long.rules[0].duration_seconds = Some(MAX_WINDOW_SECONDS + 1);
        let mut zero = ok.clone();
        zero.rules[0].duration_seconds = Some(0);
        let mut bad_cron = ok.clone();
        bad_cron.rules[0].start_cron = "0 25 * * *".into();
        let mut six = ok.clone();
        six.rules[0].start_cron = "0 0 8 * * *".into();
        let mut never = ok.clone();
        never.rules[0].start_cron = "0 0 30 2 *".into();
        let mut many = ok.clone();
        many.rules[0].replicas = 2000;
        let cases = [
            (no_baseline, "scaling_schedule.baseline_replicas"),
            (no_rules, "scaling_schedule.rules"),
            (no_cron, "scaling_schedule.rules[0].start_cron"),
            (no_duration, "scaling_schedule.rules[0].duration_seconds"),
            (long, "scaling_schedule.rules[0].duration_seconds"),
            (zero, "scaling_schedule.rules[0].duration_seconds"),
            (bad_cron, "scaling_schedule.rules[0].start_cron"),
            (six, "scaling_schedule.rules[0].start_cron"),
            (never, "scaling_schedule.rules[0].start_cron"),
            (many, "scaling_schedule.rules[0].replicas"),
        ];
        for (s, field) in cases {
            assert_eq!(validate(&s, 1024).map_err(|e| e.field), Err(field.to_string()), "{s:?}");
        }
        // Disabled: incomplete rules are kept (GPUStack's UI saves drafts), broken ones are not.
        let draft = ScalingSchedule {
            enabled: false,
            paused: false,
            baseline_replicas: None,
            rules: vec![ScalingScheduleRule {
                start_cron: String::new(),
                duration_seconds: None,
                replicas: 1,
                name: None,
            }],
        };
        assert_eq!(validate(&draft, 1024), Ok(()));
        assert!(parse_cron("@daily").is_ok());
    }
}
