//! The CronJob controller: at each scheduled time a Job `<cronjob>-<minutes since epoch>`
//! owned by the CronJob, honouring `suspend`, `concurrencyPolicy`, `startingDeadlineSeconds`,
//! `timeZone` and the job history limits, as the real controller does.
//!
//! Like the real one it starts only the most recent missed run (looking back at most a week),
//! counted from `status.lastScheduleTime` or else the CronJob's creation.

use jiff::{Timestamp, ToSpan as _, Zoned, tz::TimeZone};
use serde_json::{Value, json};

use super::{Controller, Error, Kind, Objects, controller_uid, is_deleting, name, namespace, uid};

const COMPONENT: &str = "cronjob-controller";

/// See the module doc.
pub(crate) struct CronJobController;

impl Controller for CronJobController {
    const NAME: &'static str = "cronjob";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::CronJob, Kind::Job]
    }

    async fn pass(&mut self, objects: &Objects) -> Result<(), Error> {
        let cronjobs = objects.list(Kind::CronJob, None).await?;
        if cronjobs.is_empty() {
            return Ok(());
        }
        let jobs = objects.list(Kind::Job, None).await?;
        let mut result = Ok(());
        for cj in cronjobs {
            if !is_deleting(&cj)
                && let Err(e) = reconcile_cronjob(objects, &cj, &jobs).await
            {
                result = Err(e);
            }
        }
        result
    }
}

/// A parsed five-field cron schedule (minute hour day-of-month month day-of-week), with the
/// `@hourly`-style macros.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month / day-of-week were `*`: when both are restricted a day matching
    /// either runs (the classic cron rule).
    days_any: bool,
    weekdays_any: bool,
}

impl Schedule {
    /// Parses a schedule; Err names what is wrong.
    pub(crate) fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "expected exactly 5 fields, found {}: {spec:?}",
                fields.len()
            ));
        };
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (weekdays, weekdays_any) = field(weekday, 0, 7, DAYS)?;
        let (days, days_any) = field(day, 1, 31, &[])?;
        Ok(Schedule {
            minutes: field(minute, 0, 59, &[])?.0,
            hours: field(hour, 0, 23, &[])?.0,
            days,
            months: field(month, 1, 12, MONTHS)?.0,
            // 7 is Sunday too.
            weekdays: (weekdays | (weekdays >> 7)) & 0x7f,
            days_any,
            weekdays_any,
        })
    }

    /// Returns true if and only if the schedule fires at the minute of `t`.
    pub(crate) fn matches(&self, t: &Zoned) -> bool {
        let bit = |set: u64, v: i8| set & (1u64 << v) != 0;
        let day = bit(self.days, t.day());
        let weekday = bit(self.weekdays, t.weekday().to_sunday_zero_offset());
        let day_ok = match (self.days_any, self.weekdays_any) {
            (false, false) => day || weekday,
            _ => day && weekday,
        };
        bit(self.minutes, t.minute())
            && bit(self.hours, t.hour())
            && bit(self.months, t.month())
            && day_ok
    }

    /// The most recent time the schedule fired in (`after`, `now`], in zone `tz`, looking back
    /// at most a week.
    pub(crate) fn last_fire(
        &self,
        after: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        let floor =
            Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(60)).ok()?;
        let limit = after.max(now.checked_sub(168.hours()).ok()?);
        let mut t = floor;
        while t > limit {
            if self.matches(&t.to_zoned(tz.clone())) {
                return Some(t);
            }
            t = t.checked_sub(1.minute()).ok()?;
        }
        None
    }
}

/// Parses one field into a bit set over `min..=max`; the flag says it was a plain `*`.
fn field(spec: &str, min: u8, max: u8, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u8, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u8 + min);
        }
        match s.parse::<u8>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("{s:?} is not a value in {min}-{max}")),
        }
    };
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u8>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `a/n` means from a to the end.
                None if step > 1 => (value(r)?, max),
                None => (value(r)?, value(r)?),
            },
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, spec == "*" || spec == "?"))
}

fn has_condition(job: &Value, ty: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

fn finished(job: &Value) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

async fn reconcile_cronjob(objects: &Objects, cj: &Value, jobs: &[Value]) -> Result<(), Error> {
    let ns = namespace(cj).unwrap_or("default");
    let spec = &cj["spec"];
    let mut mine: Vec<&Value> = jobs
        .iter()
        .filter(|j| {
            namespace(j) == Some(ns) && controller_uid(j) == Some(uid(cj)) && !is_deleting(j)
        })
        .collect();
    mine.sort_by(|a, b| {
        a["metadata"]["creationTimestamp"]
            .as_str()
            .cmp(&b["metadata"]["creationTimestamp"].as_str())
            .then(name(a).cmp(name(b)))
    });

    // History: keep the newest finished jobs up to the limits.
    for (ty, limit) in [
        ("Complete", int(&spec["successfulJobsHistoryLimit"], 3)),
        ("Failed", int(&spec["failedJobsHistoryLimit"], 1)),
    ] {
        let done: Vec<&&Value> = mine.iter().filter(|j| has_condition(j, ty)).collect();
        for old in done.iter().take(done.len().saturating_sub(limit)) {
            objects.delete(Kind::Job, Some(ns), name(old)).await?;
        }
    }

    let mut last_schedule = cj["status"]["lastScheduleTime"].as_str().map(str::to_owned);
    let schedule = match Schedule::parse(spec["schedule"].as_str().unwrap_or("")) {
        Ok(s) => Some(s),
        Err(why) => {
            objects
                .event(
                    Kind::CronJob,
                    cj,
                    true,
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {why}"),
                    COMPONENT,
                )
                .await?;
            None
        }
    };
    if let Some(schedule) = schedule.filter(|_| spec["suspend"] != true) {
        let tz = spec["timeZone"]
            .as_str()
            .and_then(|z| TimeZone::get(z).ok())
            .unwrap_or(TimeZone::UTC);
        let since = last_schedule
            .as_deref()
            .or(cj["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        let now = Timestamp::now();
        let due = schedule.last_fire(since, now, &tz).filter(|t| {
            spec["startingDeadlineSeconds"]
                .as_i64()
                .is_none_or(|d| now.as_second() - t.as_second() <= d)
        });
        if let Some(t) = due {
            let active: Vec<&&Value> = mine.iter().filter(|j| !finished(j)).collect();
            let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
            if policy == "Forbid" && !active.is_empty() {
                // The run waits (still due) until the previous one finishes.
            } else {
                if policy == "Replace" {
                    for job in &active {
                        objects.delete(Kind::Job, Some(ns), name(job)).await?;
                    }
                }
                let stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                let job_name = format!("{}-{}", name(cj), t.as_second() / 60);
                let template = &spec["jobTemplate"];
                let mut annotations = template["metadata"]["annotations"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                annotations.insert(
                    "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
                    json!(stamp),
                );
                let job = json!({
                    "metadata": {
                        "name": job_name,
                        "namespace": ns,
                        "labels": template["metadata"]["labels"],
                        "annotations": annotations,
                        "ownerReferences": [super::owner_ref(Kind::CronJob, cj)],
                    },
                    "spec": template["spec"],
                });
                if objects.create(Kind::Job, job).await?.is_some() {
                    tracing::info!(cronjob = %format!("{ns}/{}", name(cj)), job = %job_name, "cronjob started job");
                    objects
                        .event(
                            Kind::CronJob,
                            cj,
                            false,
                            "SuccessfulCreate",
                            &format!("Created job {job_name}"),
                            COMPONENT,
                        )
                        .await?;
                }
                last_schedule = Some(stamp);
            }
        }
    }

    let fresh = objects.list(Kind::Job, Some(ns)).await?;
    let active: Vec<Value> = fresh
        .iter()
        .filter(|j| controller_uid(j) == Some(uid(cj)) && !finished(j) && !is_deleting(j))
        .map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": name(j), "namespace": ns, "uid": uid(j)}))
        .collect();
    let last_success = fresh
        .iter()
        .filter(|j| controller_uid(j) == Some(uid(cj)) && has_condition(j, "Complete"))
        .filter_map(|j| j["status"]["completionTime"].as_str())
        .max()
        .map(str::to_owned)
        .or_else(|| {
            cj["status"]["lastSuccessfulTime"]
                .as_str()
                .map(str::to_owned)
        });
    let mut status = json!({});
    if !active.is_empty() {
        status["active"] = json!(active);
    }
    if let Some(t) = last_schedule {
        status["lastScheduleTime"] = json!(t);
    }
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(t);
    }
    if cj["status"] != status {
        // Optimistic: a status someone else just wrote (lastScheduleTime) must not be lost.
        let mut cj = cj.clone();
        cj["status"] = status;
        objects.update_status(Kind::CronJob, cj).await?;
    }
    Ok(())
}

fn int(v: &Value, default: usize) -> usize {
    v.as_u64().map(|n| n as usize).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        s.parse::<Timestamp>().unwrap().to_zoned(TimeZone::UTC)
    }

    #[test]
    fn schedules_parse_and_match_like_cron() {
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        assert!(every5.matches(&at("2026-11-20T10:15:00Z")));
        assert!(!every5.matches(&at("2026-11-20T10:16:00Z")));
        let weekdays = Schedule::parse("30 2 * * mon-fri").unwrap();
        assert!(weekdays.matches(&at("2026-11-20T02:30:00Z"))); // a Friday
        assert!(!weekdays.matches(&at("2026-11-22T02:30:00Z"))); // a Sunday
        // Day-of-month and day-of-week both restricted: either day runs.
        let either = Schedule::parse("0 0 1 * 0").unwrap();
        assert!(either.matches(&at("2026-11-01T00:00:00Z")));
        assert!(either.matches(&at("2026-11-22T00:00:00Z")));
        assert!(!either.matches(&at("2026-11-20T00:00:00Z")));
        assert_eq!(
            Schedule::parse("@daily").unwrap(),
            Schedule::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            Schedule::parse("0 0 * * 7").unwrap(),
            Schedule::parse("0 0 * * sun").unwrap()
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "* * * foo *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_most_recent_missed_run_is_due() {
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let now: Timestamp = "2026-11-20T10:20:30Z".parse().unwrap();
        let since: Timestamp = "2026-11-20T07:10:00Z".parse().unwrap();
        assert_eq!(
            hourly.last_fire(since, now, &TimeZone::UTC),
            Some("2026-11-20T10:00:00Z".parse().unwrap())
        );
        let since: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
        assert_eq!(
            hourly.last_fire(since, now, &TimeZone::UTC),
            None,
            "already ran at 10:00"
        );
    }
}
